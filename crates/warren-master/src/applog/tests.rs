//! Table tests of the grouping and the levels: lines in, events out.

use super::*;

/// Feeds `input` (one line each, a final flush), expects `want`: (level, text) per event.
fn check(input: &[&str], want: &[(Level, &str)]) {
    let mut g = Grouper::default();
    let mut out = Vec::new();
    for line in input {
        g.push(line, 0, &mut out);
    }
    g.flush(&mut out);
    let got: Vec<(Level, &str)> = out.iter().map(|e| (e.level, e.text.as_str())).collect();
    assert_eq!(got, want, "input: {input:#?}");
    for e in &out {
        assert_eq!(e.lines, e.text.lines().count().max(1), "{e:?}");
    }
}

use Level::{Error, Info, Warn};

const TB: &[&str] = &[
    "Traceback (most recent call last):",
    "  File \"/app/app.py\", line 4, in application",
    "    return 1 / 0",
    "           ~~^~~",
    "ZeroDivisionError: division by zero",
];

#[test]
fn plain_lines_are_info_one_event_each() {
    check(
        &["hello", "", "  indented"],
        &[(Info, "hello"), (Info, ""), (Info, "  indented")],
    );
}

#[test]
fn a_traceback_is_one_event_at_error() {
    let mut input = vec!["before"];
    input.extend(TB);
    input.push("after");
    check(
        &input,
        &[(Info, "before"), (Error, &TB.join("\n")), (Info, "after")],
    );
    // Ended by the flush (no line after it).
    check(TB, &[(Error, &TB.join("\n"))]);
}

#[test]
fn the_worker_header_and_a_logged_error_head_their_traceback() {
    let header = "warren-worker: app boom: request 0000000000000001: unhandled exception:";
    let mut input = vec![header];
    input.extend(TB);
    let whole = format!("{header}\n{}", TB.join("\n"));
    check(&input, &[(Error, &whole)]);

    let flask = "[2024-05-01 12:00:00,123] ERROR in app: Exception on /boom [GET]";
    let mut input = vec![flask];
    input.extend(TB);
    check(&input, &[(Error, &format!("{flask}\n{}", TB.join("\n")))]);

    // A header with no traceback after it is a line of its own.
    check(&[header, "next"], &[(Info, header), (Info, "next")]);
    check(&[flask], &[(Error, flask)]);
    // A plain line is not a header.
    let mut input = vec!["plain"];
    input.extend(TB);
    check(&input, &[(Info, "plain"), (Error, &TB.join("\n"))]);
}

#[test]
fn chained_exceptions_stay_in_one_event() {
    for sentence in [
        "During handling of the above exception, another exception occurred:",
        "The above exception was the direct cause of the following exception:",
    ] {
        let mut input: Vec<&str> = TB.to_vec();
        input.extend(["", sentence, ""]);
        input.extend(TB);
        check(&input, &[(Error, &input.join("\n"))]);
    }
    // A blank line after the exception that chains nothing is a line of its own.
    let mut input: Vec<&str> = TB.to_vec();
    input.extend(["", "more"]);
    check(
        &input,
        &[(Error, &TB.join("\n")), (Info, ""), (Info, "more")],
    );
    let mut input: Vec<&str> = TB.to_vec();
    input.extend([
        "",
        "During handling of the above exception, another exception occurred:",
        "x",
    ]);
    check(
        &input,
        &[
            (Error, &TB.join("\n")),
            (Info, ""),
            (
                Info,
                "During handling of the above exception, another exception occurred:",
            ),
            (Info, "x"),
        ],
    );
}

#[test]
fn an_import_syntax_error_is_one_event() {
    let input = [
        "warren-worker: app broken: importing app:application failed:",
        "Traceback (most recent call last):",
        "  File \"/app/app.py\", line 3",
        "    def f(:",
        "          ^",
        "SyntaxError: invalid syntax",
    ];
    check(&input, &[(Error, &input.join("\n"))]);
}

#[test]
fn levels_of_lines() {
    let check = |line: &str, want: Level| assert_eq!(level(line), want, "{line:?}");
    check("ERROR:root:something broke", Error);
    check("CRITICAL:app:down", Error);
    check("WARNING:root:careful", Warn);
    check(
        "[2024-05-01 12:00:00,123] ERROR in app: Exception on / [GET]",
        Error,
    );
    check("[2024-05-01 12:00:00,123] WARNING in app: slow", Warn);
    check("2024-05-01 12:00:00,123 ERROR myapp: x", Error);
    check(
        "[2024-05-01 12:00:00 +0000] [12] [ERROR] Worker failed",
        Error,
    );
    check("FATAL: no config", Error);
    check("WARN something", Warn);
    check("hello", Info);
    check("an error happened", Info);
    check("ERRORS: none", Info);
    check("INFO:root:fine", Info);
    check("a b c d e ERROR", Info);
    check("", Info);
}

#[test]
fn a_traceback_is_capped_but_keeps_its_exception_line() {
    let body: Vec<String> = (0..MAX_GROUP_LINES + 50)
        .map(|i| format!("  File \"x.py\", line {i}"))
        .collect();
    let mut g = Grouper::default();
    let mut out = Vec::new();
    g.push("Traceback (most recent call last):", 0, &mut out);
    for l in &body {
        g.push(l, 0, &mut out);
    }
    g.push("RecursionError: too deep", 0, &mut out);
    g.flush(&mut out);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert!(e.text.ends_with("RecursionError: too deep"), "{}", e.text);
    assert!(e.text.contains("... (51 lines cut)"), "{}", e.text);
    assert_eq!(e.lines, MAX_GROUP_LINES + 2);
    assert!(e.text.len() <= MAX_GROUP_BYTES + 8 * 1024);
}

#[test]
fn repeats_are_counted_until_the_traceback_changes() {
    let mut r = Repeats::default();
    assert_eq!(r.check("a"), None);
    assert_eq!(r.check("a"), Some(2));
    assert_eq!(r.check("a"), Some(3));
    assert_eq!(r.check("b"), None);
    assert_eq!(r.check("a"), None);
    assert_eq!(r.check("a"), Some(2));
}
