//! The scanner ([`scan`]) against a reference implementation written straight from the rules
//! with no care for cost, on generated mixes of the characters that matter; and its cost: the
//! bytes it examines stay within a small multiple of the text's length, whatever the text
//! (texts that cost their length squared before are here as regressions).

use serde_json::json;

use super::generated::Rng;
use crate::placeholders::parse::{parse_reference, scan, split, Piece};
use crate::placeholders::{check_activity, StageTaskNames, TaskToCheck};

/// Bytes examined per byte of text, at most. Each byte is read by the search for `$`, by at
/// most one candidate's unquoted scan, one `'…'` and one `"…"` quoted key, and the end search
/// of a malformed `${`.
const MAX_EXAMINED_PER_BYTE: usize = 8;

/// The rules of `crate::placeholders` applied one position at a time.
fn reference_split(s: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    fn text<'s>(pieces: &mut Vec<Piece<'s>>, s: &'s str, from: usize, to: usize) {
        if from < to {
            pieces.push(Piece::Text(&s[from..to]));
        }
    }
    while i < s.len() {
        let rest = &s[i..];
        if rest.starts_with("$${") || rest.starts_with("$$<") {
            text(&mut pieces, s, text_start, i);
            pieces.push(Piece::Text(&s[i + 1..i + 3]));
            i += 3;
            text_start = i;
        } else if rest.starts_with("${") {
            text(&mut pieces, s, text_start, i);
            let (reference, end) = match parse_reference(s, i + 2, '}').0 {
                Ok((reference, end)) => (Ok(reference), end),
                Err(e) => {
                    // Its first `}` (included) or the next `${` (excluded), whichever comes first.
                    let after = &s[i + 2..];
                    let close = after.find('}').map(|k| i + 2 + k + 1);
                    let next = after.find("${").map(|k| i + 2 + k);
                    let end = [close, next].into_iter().flatten().min();
                    (Err(e), end.unwrap_or(s.len()))
                }
            };
            pieces.push(Piece::Placeholder {
                text: &s[i..end],
                reference,
            });
            i = end;
            text_start = i;
        } else if let Some(Ok((reference, end))) = rest
            .starts_with("$<")
            .then(|| parse_reference(s, i + 2, '>').0)
        {
            text(&mut pieces, s, text_start, i);
            pieces.push(Piece::Placeholder {
                text: &s[i..end],
                reference: Ok(reference),
            });
            i = end;
            text_start = i;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    text(&mut pieces, s, text_start, s.len());
    pieces
}

/// What the scanner reacts to, and a little of what references are made of.
const TOKENS: &[&str] = &[
    "$", "$", "${", "${", "$<", "$<", "}", ">", "$${", "$$<", "$$", "{", "<", "[", "]", "'", "\"",
    "\\", ".", "*", "0", "-1", "a", "dev", "results", "task1", " ", "é", "😀",
];

fn mix(rng: &mut Rng, max_tokens: usize) -> String {
    (0..rng.below(max_tokens))
        .map(|_| rng.pick(TOKENS))
        .collect()
}

#[track_caller]
fn assert_linear(s: &str) {
    let (_, examined) = scan(s);
    assert!(
        examined <= MAX_EXAMINED_PER_BYTE * (s.len() + 1),
        "{examined} bytes examined for a text of {} bytes: {:?}",
        s.len(),
        s.chars().take(80).collect::<String>()
    );
}

#[test]
fn generated_mixes_split_as_the_rules_say_at_linear_cost() {
    let mut rng = Rng::new(11);
    for case in 0..20_000 {
        let s = mix(&mut rng, 40);
        assert_eq!(split(&s), reference_split(&s), "case {case}: {s:?}");
        assert_linear(&s);
    }
}

#[test]
fn long_generated_mixes_stay_linear() {
    let mut rng = Rng::new(12);
    for _ in 0..200 {
        let s = mix(&mut rng, 4000);
        assert_linear(&s);
    }
}

/// Repetitions of what once made scanning quadratic (a malformed `${` searched for its `}` to
/// the end of the text, for every `${`), and of what could (quoted keys that never close,
/// candidates inside candidates).
#[test]
fn adversarial_repetitions_stay_linear() {
    const UNITS: &[&str] = &[
        "${",
        "$<",
        "${a",
        "$<a",
        "${a.",
        "$<a.b",
        "${a['",
        "$<a['",
        "${a[\"",
        "$<a[\"",
        "${['",
        "$<['",
        "${a['$<a[\"",
        "$<a['${a[\"",
        "${a[\\'",
        "${a[0",
        "$<a[-",
        "}${",
        "${}",
        "$<>",
        "$${",
        "$$<",
        "$",
        "${a['x']",
        "$<a['}",
        "${dev.results.task1.x",
    ];
    for unit in UNITS {
        for prefix in ["", "${a['", "$<a[\"", "${a[\"", "$<a['"] {
            let s = format!("{prefix}{}", unit.repeat(20_000));
            assert_linear(&s);
        }
    }
}

/// The hostile inputs of issue 9: a MiB of `${` (every one a malformed placeholder), of `$<`,
/// and nested variants finish, at linear cost, and a check lists only what it was asked to.
#[test]
fn a_mebibyte_of_openers_is_linear_and_listed_within_bounds() {
    let mebibyte = 1 << 20;
    for unit in ["${", "$<", "${$<", "$<${", "${a['$<a[\"", "$<a.b.c"] {
        let s = unit.repeat(mebibyte / unit.len());
        assert_linear(&s);
    }
    let s = "${".repeat(mebibyte / 2);
    let value = json!(s);
    let tasks = [TaskToCheck {
        position: 1,
        name: "t",
        template: &json!({}),
        configurations: &value,
    }];
    let checked = check_activity(
        "dev",
        &tasks,
        &Default::default(),
        &StageTaskNames::new(),
        20,
    );
    assert_eq!(checked.bad, mebibyte / 2);
    assert_eq!(checked.listed.len(), 20);
    assert_eq!(checked.placeholders, vec![(1, mebibyte / 2)]);
}

/// A malformed placeholder may run to the end of a long text: messages quote its beginning.
#[test]
fn messages_quote_long_placeholders_in_part() {
    let long = format!("${{dev.{}", "x".repeat(100_000));
    let value = json!(long);
    let tasks = [TaskToCheck {
        position: 1,
        name: "t",
        template: &json!({}),
        configurations: &value,
    }];
    let known = ["dev".to_owned()].into();
    let checked = check_activity("dev", &tasks, &known, &StageTaskNames::new(), 20);
    let message = checked.listed[0].to_string();
    assert!(message.len() < 400, "{message}");
    assert!(message.contains("more bytes)"), "{message}");
}
