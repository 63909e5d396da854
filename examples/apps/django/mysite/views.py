from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST


@require_GET
def index(request):
    return HttpResponse("Hello from Django!\n", content_type="text/plain")


@require_GET
def item(request, n):
    return JsonResponse({"item": n})


@csrf_exempt
@require_POST
def echo(request):
    return JsonResponse({
        "length": len(request.body),
        "name": request.POST.get("name"),
    })
