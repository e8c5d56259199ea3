//! Column matcher tests: every value kind through the real rule parser, against real Arrow
//! arrays, plus a differential property test of the pattern path against a regex reference;
//! the two-column comparisons of `fieldref` and the date parts of the time modifiers.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, LargeStringArray,
    StringArray, StringViewArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt64Array,
};
use proptest::prelude::*;

use super::*;
use crate::detect::sigma::rule::{SelectionKind, SigmaDocument};
use crate::detect::sigma::value::FieldMatcher;

/// The matcher of `key: value` (YAML) as the rule parser builds it.
fn field_matcher(key: &str, value: &str) -> FieldMatcher {
    let text = format!(
        "title: t\nlogsource:\n    category: test\ndetection:\n    sel:\n        {key}: {value}\n    condition: sel\n"
    );
    let docs = super::super::rule::parse(Path::new("t.yml"), &text)
        .unwrap_or_else(|e| panic!("{key}: {value}: {e}"));
    let Some(SigmaDocument::Rule(rule)) = docs.into_iter().next() else {
        panic!("not a rule");
    };
    match rule.detection.selections[0].kind.clone() {
        SelectionKind::All(mut ms) => ms.remove(0),
        other => panic!("unexpected selection {other:?}"),
    }
}

/// Registers each `key: value` entry on its own slot (all its values and variants ORed there)
/// and evaluates `array`: one row of booleans per entry.
fn hits(entries: &[(&str, &str)], array: &dyn Array) -> Vec<Vec<bool>> {
    let matcher = build(entries);
    let bits = matcher.evaluate(array).expect("supported array");
    to_rows(&bits)
}

fn build(entries: &[(&str, &str)]) -> ColumnMatcher {
    let mut b = ColumnMatcherBuilder::new();
    for (slot, (key, value)) in entries.iter().enumerate() {
        for v in field_matcher(key, value).values {
            for variant in &v.variants {
                b.add(slot, variant).expect("supported value");
            }
        }
    }
    b.build().unwrap()
}

fn to_rows(bits: &[BooleanBuffer]) -> Vec<Vec<bool>> {
    bits.iter().map(|b| b.iter().collect()).collect()
}

fn strings(values: &[Option<&str>]) -> StringArray {
    StringArray::from(values.to_vec())
}

/// One entry against a string column: which rows match.
fn check(key: &str, value: &str, rows: &[Option<&str>], expected: &[bool]) {
    let got = hits(&[(key, value)], &strings(rows));
    assert_eq!(got[0], expected, "{key}: {value} over {rows:?}");
}

const T: bool = true;
const F: bool = false;

#[test]
fn exact_match_is_whole_value_and_case_insensitive() {
    check(
        "F",
        "'cmd.exe'",
        &[
            Some("cmd.exe"),
            Some("CMD.EXE"),
            Some("xcmd.exe"),
            Some("cmd.exe "),
            Some(""),
            None,
        ],
        &[T, T, F, F, F, F],
    );
    check("F", "''", &[Some(""), Some("a"), None], &[T, F, F]);
}

/// "All values are treated as case-insensitive strings": letters outside ASCII too. Found by
/// the differential test (`diff_tests.rs`): `param2: 'arrêté'` missed a French `ARRÊTÉ`.
#[test]
fn case_folding_covers_letters_outside_ascii() {
    let rows = [
        Some("arrêté"),
        Some("ARRÊTÉ"),
        Some("Arrêté"),
        Some("ARRETE"),
        Some("service ARRÊTÉ."),
        None,
    ];
    check("F", "'arrêté'", &rows, &[T, T, T, F, F, F]);
    check("F|contains", "'RRÊT'", &rows, &[T, T, T, F, T, F]);
    check("F|endswith", "'?TÉ.'", &rows, &[F, F, F, F, T, F]);
    check("F|startswith", "'SERVICE ar*'", &rows, &[F, F, F, F, T, F]);
    check("F|cased", "'arrêté'", &rows, &[T, F, F, F, F, F]);
    // Cyrillic and Greek, and a pattern sharing the column with ASCII ones.
    let got = hits(
        &[
            ("F", "'ΣΊΓΜΑ'"),
            ("F|contains", "'мимикатц'"),
            ("F", "'sigma'"),
        ],
        &strings(&[Some("σίγμα"), Some("x МИМИКАТЦ y"), Some("SIGMA")]),
    );
    assert_eq!(got, [[T, F, F], [F, T, F], [F, F, T]]);
    // Field references: by lower case when a letter outside ASCII differs.
    let same = compare_columns(
        &strings(&[Some("Arrêté"), Some("arrêté"), Some("arrete")]),
        &strings(&[Some("ARRÊTÉ"), Some("arrêté"), Some("ARRÊTÉ")]),
        false,
    )
    .unwrap();
    assert_eq!(same.iter().collect::<Vec<_>>(), [T, T, F]);
}

#[test]
fn prefix_suffix_contains_check_anchoring() {
    let rows = [
        Some(r"C:\Windows\System32\cmd.exe"),
        Some(r"c:\windows\cmd.exe.bak"),
        Some(r"D:\tools\cmd.exe"),
        Some(r"\cmd.exe"),
        None,
    ];
    check("F|startswith", r"'C:\Windows\'", &rows, &[T, T, F, F, F]);
    check("F|endswith", r"'\cmd.exe'", &rows, &[T, F, T, T, F]);
    check("F|contains", r"'\CMD.EXE'", &rows, &[T, T, T, T, F]);
    // The literal occurs twice: once unanchored, once at the end; overlapping matches must
    // report the second too.
    check(
        "F|endswith",
        "'abab'",
        &[Some("ababab"), Some("abababa")],
        &[T, F],
    );
}

#[test]
fn wildcards_inner_star_and_question_mark() {
    let rows = [
        Some("abc"),
        Some("aXXbYYc"),
        Some("acb"),
        Some("ab"),
        Some("ABC"),
        None,
    ];
    check("F", "'a*b*c'", &rows, &[T, T, F, F, T, F]);
    check(
        "F",
        "'c?d.exe'",
        &[
            Some("cmd.exe"),
            Some("c\u{e9}d.exe"),
            Some("cd.exe"),
            Some("cmmd.exe"),
        ],
        &[T, T, F, F],
    );
    // No literal at all: verified on every row.
    check(
        "F",
        "'??'",
        &[Some("ab"), Some("a"), Some("\u{e9}1"), Some("abc"), None],
        &[T, F, T, F, F],
    );
    check("F", "'*'", &[Some(""), Some("x"), None], &[T, T, F]);
    check(
        "F|contains",
        "'power*-enc'",
        &[
            Some("C:\\powershell.exe -nop -ENC aGk="),
            Some("-enc then powershell"),
        ],
        &[T, F],
    );
}

#[test]
fn escaped_wildcards_are_literals() {
    check(
        "F",
        r"'a\*b'",
        &[Some("a*b"), Some("axb"), Some("a**b")],
        &[T, F, F],
    );
    check("F", r"'a\?b'", &[Some("a?b"), Some("axb")], &[T, F]);
    check(
        "F",
        r"'C:\\*.bat'",
        &[Some(r"C:\x.bat"), Some("C:x.bat"), Some(r"D:\x.bat")],
        &[T, F, F],
    );
}

#[test]
fn cased_literals_share_the_automaton_but_keep_their_case() {
    let rows = strings(&[Some("Foo"), Some("foo"), Some("xFooy"), Some("xfooy")]);
    let entries = [
        ("F|cased", "'Foo'"),
        ("F", "'Foo'"),
        ("F|contains|cased", "'Foo'"),
        ("F|cased", "'F?o'"),
    ];
    let m = build(&entries);
    // `foo` once for its three users, and `o`, the prefilter of `F?o`.
    assert_eq!(m.automaton.as_ref().map(|a| a.patterns_len()), Some(2));
    assert_eq!(
        to_rows(&m.evaluate(&rows).unwrap()),
        [
            vec![T, F, F, F],
            vec![T, T, F, F],
            vec![T, F, T, F],
            vec![T, F, F, F]
        ]
    );
}

#[test]
fn shared_literal_sets_the_bit_of_every_user() {
    // Four rules test `evil` on the same column in different ways: one automaton pattern, and
    // each gets its own answer.
    let entries = [
        ("F|contains", "'evil'"),
        ("F|contains", "'EVIL'"),
        ("F|endswith", "'evil'"),
        ("F", "evil"),
        ("F|startswith", "'evil'"),
        ("F|contains", "['good', 'evil']"),
    ];
    let m = build(&entries);
    assert_eq!(m.automaton.as_ref().map(|a| a.patterns_len()), Some(2));
    let rows = strings(&[
        Some("evil"),
        Some("an evil x"),
        Some("this is EVIL"),
        Some("good"),
        Some("ev il"),
    ]);
    assert_eq!(
        to_rows(&m.evaluate(&rows).unwrap()),
        [
            vec![T, T, T, F, F],
            vec![T, T, T, F, F],
            vec![T, F, T, F, F],
            vec![T, F, F, F, F],
            vec![T, F, F, F, F],
            vec![T, T, T, T, F],
        ]
    );
}

#[test]
fn nulls_exists_and_absent_columns() {
    let entries = [
        ("F", "null"),
        ("F|exists", "true"),
        ("F|exists", "false"),
        ("F|contains", "'x'"),
        ("F", "'*'"),
    ];
    let rows = strings(&[Some("x"), None, Some("")]);
    assert_eq!(
        hits(&entries, &rows),
        [
            vec![F, T, F],
            vec![T, F, T],
            vec![F, T, F],
            vec![T, F, F],
            vec![T, F, T],
        ]
    );
    let m = build(&entries);
    assert_eq!(
        to_rows(&m.evaluate_absent(2).bits),
        [vec![T, T], vec![F, F], vec![T, T], vec![F, F], vec![F, F]]
    );
}

#[test]
fn numbers_against_strings_compare_by_text_and_against_numbers_by_value() {
    let entries = [("F", "4688"), ("F", "'4688'"), ("F", "0x17"), ("F", "1.5")];
    assert_eq!(
        hits(
            &entries,
            &strings(&[
                Some("4688"),
                Some("04688"),
                Some("4688 "),
                Some("0x17"),
                Some("23"),
                Some("1.5"),
            ])
        ),
        [
            vec![T, F, F, F, F, F],
            vec![T, F, F, F, F, F],
            vec![F, F, F, T, F, F],
            vec![F, F, F, F, F, T],
        ]
    );
    let ints = Int64Array::from(vec![Some(4688), Some(23), None, Some(1)]);
    assert_eq!(
        hits(&entries, &ints),
        [
            vec![T, F, F, F],
            // A quoted '4688' still matches the integer 4688, through its text.
            vec![T, F, F, F],
            vec![F, T, F, F],
            vec![F, F, F, F],
        ]
    );
    let floats = Float64Array::from(vec![4688.0, 1.5, 23.0]);
    assert_eq!(
        hits(&entries, &floats),
        [vec![T, F, F], vec![T, F, F], vec![F, F, T], vec![F, T, F]]
    );
    let small = Int32Array::from(vec![4688]);
    assert_eq!(hits(&[("F", "'46*'")], &small), [vec![T]]);
    // Numbers alone: decided on the value, without formatting rows as text.
    let numeric_only = build(&[("F", "4688"), ("F", "0x17"), ("F|gt", "5000")]);
    assert!(!numeric_only.scalars_as_text);
    assert!(build(&[("F", "4688"), ("F|contains", "'68'")]).scalars_as_text);
    assert_eq!(
        to_rows(&numeric_only.evaluate(&ints).unwrap()),
        [vec![T, F, F, F], vec![F, T, F, F], vec![F, F, F, F]]
    );
}

#[test]
fn comparisons_on_numeric_and_text_columns() {
    let entries = [
        ("F|gt", "10"),
        ("F|gte", "10"),
        ("F|lt", "2.5"),
        ("F|lte", "-1"),
    ];
    let ints = Int64Array::from(vec![Some(5), Some(10), Some(11), Some(-1), None]);
    assert_eq!(
        hits(&entries, &ints),
        [
            vec![F, F, T, F, F],
            vec![F, T, T, F, F],
            vec![F, F, F, T, F],
            vec![F, F, F, T, F],
        ]
    );
    let big = UInt64Array::from(vec![u64::MAX, 0]);
    assert_eq!(
        hits(&entries, &big),
        [vec![T, F], vec![T, F], vec![F, T], vec![F, F]]
    );
    let floats = Float64Array::from(vec![2.4, 10.0, f64::NAN]);
    assert_eq!(
        hits(&entries, &floats),
        [vec![F, F, F], vec![F, T, F], vec![T, F, F], vec![F, F, F]]
    );
    let text = strings(&[
        Some("11"),
        Some(" 2 "),
        Some("abc"),
        Some("1e2"),
        Some("inf"),
    ]);
    assert_eq!(
        hits(&entries, &text),
        [
            vec![T, F, F, T, F],
            vec![T, F, F, T, F],
            vec![F, T, F, F, F],
            vec![F, F, F, F, F],
        ]
    );
}

#[test]
fn cidr_on_ipv4_and_ipv6_text() {
    let entries = [("F|cidr", "'10.0.0.0/8'"), ("F|cidr", "'2001:db8::/32'")];
    let rows = strings(&[
        Some("10.1.2.3"),
        Some("11.0.0.1"),
        Some("::ffff:10.0.0.1"),
        Some("2001:db8::1"),
        Some("2001:db9::1"),
        Some("not an ip"),
        None,
    ]);
    assert_eq!(
        hits(&entries, &rows),
        [vec![T, F, T, F, F, F, F], vec![F, F, F, T, F, F, F],]
    );
    assert_eq!(
        hits(&[("F|cidr", "'0.0.0.0/0'")], &strings(&[Some("1.2.3.4")])),
        [vec![T]]
    );
}

#[test]
fn regex_flags() {
    let entries = [
        ("F|re", "'^abc$'"),
        ("F|re|i", "'^abc$'"),
        ("F|re|m", "'^abc$'"),
        ("F|re|s", "'a.c'"),
    ];
    let rows = strings(&[Some("abc"), Some("ABC"), Some("x\nabc"), Some("a\nc"), None]);
    assert_eq!(
        hits(&entries, &rows),
        [
            vec![T, F, F, F, F],
            vec![T, T, F, F, F],
            vec![T, F, T, F, F],
            vec![T, F, T, T, F],
        ]
    );
}

#[test]
fn regexes_with_required_literals_run_only_where_those_occur() {
    let m = build(&[
        ("F|re", "'powershell.*-enc'"),
        ("F|re|i", "'(?:cmd|pwsh)\\.exe$'"),
        ("F|re", "'^.*$'"),
    ]);
    // The first two have literals in the automaton; `^.*$` can match anything.
    assert_eq!(m.unfiltered, [Verify::Regex(2)]);
    let rows = strings(&[
        Some("powershell -nop -enc x"),
        Some("POWERSHELL -ENC"),
        Some(r"C:\x\PWSH.EXE"),
        Some("cmd.exe /c"),
        Some(""),
    ]);
    assert_eq!(
        to_rows(&m.evaluate(&rows).unwrap()),
        [
            vec![T, F, F, F, F],
            vec![F, F, T, F, F],
            vec![T, T, T, T, T],
        ]
    );
}

#[test]
fn long_contains_literals_sharing_their_start_are_told_apart() {
    // The automaton holds the literals' first bytes (shared by all three); the tails decide,
    // wherever the start occurs, also where it occurs twice and only the second one continues.
    let rows = [
        Some("SHA1=00,IMPHASH=AAAA1111,MD5=FF"),
        Some("imphash=aaaa2222"),
        Some("IMPHASH=AAAA11IMPHASH=AAAA3333"),
        Some("IMPHASH=AAAA111"),
        Some("IMPHASH=AAAA11112"),
        None,
    ];
    let got = hits(
        &[
            ("Hashes|contains", "'IMPHASH=AAAA1111'"),
            ("Hashes|contains", "'IMPHASH=AAAA2222'"),
            ("Hashes|contains|cased", "'IMPHASH=AAAA3333'"),
            ("Hashes|contains", "'IMPHASH='"),
        ],
        &strings(&rows),
    );
    assert_eq!(
        got,
        [
            vec![T, F, F, F, T, F],
            vec![F, T, F, F, F, F],
            vec![F, F, T, F, F, F],
            vec![T, T, T, T, T, F],
        ]
    );
}

#[test]
fn regex_literals_multiplied_by_classes_are_cut_to_a_few_prefixes() {
    let m = build(&[("F|re", "'https?://0[0-9]{3,11}'"), ("F|re", "'\\s-c\\s'")]);
    // `http://0` and `https://0` followed by digits make hundreds of prefixes, cut back to
    // eleven (`http://00`..`http://09`, `https://0`); `\s` starts and ends with any of many
    // spaces: no prefilter.
    assert_eq!(m.unfiltered, [Verify::Regex(1)]);
    assert_eq!(m.scanned_hooks(), 11);
    let rows = strings(&[
        Some("get http://01234/x"),
        Some("https://0x"),
        Some("cmd -c x"),
        Some("-c"),
    ]);
    assert_eq!(
        to_rows(&m.evaluate(&rows).unwrap()),
        [vec![T, F, F, F], vec![F, F, T, F]]
    );
}

#[test]
fn booleans() {
    let entries = [("F", "true"), ("F", "false")];
    let b = BooleanArray::from(vec![Some(true), Some(false), None]);
    assert_eq!(hits(&entries, &b), [vec![T, F, F], vec![F, T, F]]);
    let s = strings(&[Some("TRUE"), Some("false"), Some("1")]);
    assert_eq!(hits(&entries, &s), [vec![T, F, F], vec![F, T, F]]);
}

#[test]
fn every_string_layout_gives_the_same_answer() {
    let rows = [Some(r"C:\Windows\cmd.exe"), None, Some("powershell -enc")];
    let entries = [
        ("F|endswith", r"'\cmd.exe'"),
        ("F|contains", "' -enc'"),
        ("F", "null"),
    ];
    let expected = [vec![T, F, F], vec![F, F, T], vec![F, T, F]];
    let arrays: [ArrayRef; 3] = [
        Arc::new(StringArray::from(rows.to_vec())),
        Arc::new(LargeStringArray::from(rows.to_vec())),
        Arc::new(StringViewArray::from(rows.to_vec())),
    ];
    for a in &arrays {
        assert_eq!(hits(&entries, a.as_ref()), expected, "{}", a.data_type());
    }
}

#[test]
fn unsupported_values_and_types_are_errors() {
    let mut b = ColumnMatcherBuilder::new();
    for (key, value, feature) in [
        ("F|fieldref", "'G'", "fieldref"),
        ("F|expand", "'%dirs%\\x.exe'", "expand"),
    ] {
        let m = field_matcher(key, value);
        let err = b.add(0, &m.values[0].variants[0]).unwrap_err();
        assert_eq!(err.feature, feature, "{key}");
    }
    let m = build(&[("F", "'x'")]);
    let dates = Date32Array::from(vec![1]);
    assert_eq!(m.evaluate(&dates).unwrap_err().data_type, DataType::Date32);
    assert!(!ColumnMatcher::supports(&DataType::Date32));
}

#[test]
fn dates_in_the_forms_events_write_them() {
    for (text, utc) in [
        // evtx `UtcTime`: no zone, taken as UTC; the fraction does not matter.
        ("2025-11-27 07:40:10.132", Some("2025-11-27 07:40:10")),
        ("2025-11-27T07:40:10Z", Some("2025-11-27 07:40:10")),
        ("2025-11-27t07:40:10z", Some("2025-11-27 07:40:10")),
        ("2025-11-27T07:40", Some("2025-11-27 07:40:00")),
        // Zones move the time to UTC, across days too.
        (
            "2025-11-27T07:40:10.123456789+02:00",
            Some("2025-11-27 05:40:10"),
        ),
        ("2025-11-27T07:40:10,5-0130", Some("2025-11-27 09:10:10")),
        ("2025-11-27T00:10+01", Some("2025-11-26 23:10:00")),
        ("  2025-11-27  ", Some("2025-11-27 00:00:00")),
        ("2025-02-30", None),
        ("2025-11-27T24:00:00", None),
        ("2025-11-27T07:40:10.", None),
        ("2025-11-27T07:40:10+2", None),
        ("2025-11-27T07:40:10+24:00", None),
        ("2025-11-27T07:40:10 UTC", None),
        ("2025-11-27Z", None),
        ("2025-11-27T07", None),
        ("20251127", None),
        ("27/11/2025", None),
        ("", None),
    ] {
        assert_eq!(
            parse_datetime(text).map(|t| t.to_string()).as_deref(),
            utc,
            "{text:?}"
        );
    }
}

#[test]
fn time_parts_of_timestamps_of_every_unit_and_of_date_strings() {
    // A Sunday: ISO week 53 of 2020.
    let at = "2021-01-03T23:59:30Z";
    let secs = chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp();
    let text = [Some(at), None];
    let arrays: [ArrayRef; 7] = [
        Arc::new(TimestampSecondArray::from(vec![Some(secs), None])),
        // The zone of the type does not matter: the value is an instant, read in UTC.
        Arc::new(
            TimestampMillisecondArray::from(vec![Some(secs * 1000), None])
                .with_timezone("America/New_York"),
        ),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(secs * 1_000_000),
            None,
        ])),
        Arc::new(TimestampNanosecondArray::from(vec![
            Some(secs * 1_000_000_000),
            None,
        ])),
        Arc::new(StringArray::from(text.to_vec())),
        Arc::new(LargeStringArray::from(text.to_vec())),
        Arc::new(StringViewArray::from(text.to_vec())),
    ];
    for a in &arrays {
        for (part, expected) in [
            (TimePart::Minute, 59),
            (TimePart::Hour, 23),
            (TimePart::Day, 3),
            (TimePart::Week, 53),
            (TimePart::Month, 1),
            (TimePart::Year, 2021),
        ] {
            let got: Vec<Option<i64>> = time_parts(a.as_ref(), part).unwrap().iter().collect();
            assert_eq!(got, [Some(expected), None], "{part:?} of {}", a.data_type());
        }
    }
    // ISO weeks around new year; what is not a date (or out of range) has no part.
    let days = strings(&[
        Some("2024-12-30"),
        Some("2026-12-31"),
        Some("2027-01-01"),
        Some("2027-01-04"),
        Some("yesterday"),
    ]);
    let weeks: Vec<Option<i64>> = time_parts(&days, TimePart::Week).unwrap().iter().collect();
    assert_eq!(weeks, [Some(1), Some(53), Some(53), Some(1), None]);
    let far = TimestampSecondArray::from(vec![i64::MAX]);
    assert_eq!(time_parts(&far, TimePart::Year).unwrap().null_count(), 1);
    let e = time_parts(&Int64Array::from(vec![1]), TimePart::Hour).unwrap_err();
    assert_eq!(
        e.to_string(),
        "time modifiers read dates from timestamps and date strings, not a column of type Int64"
    );
}

#[test]
fn two_columns_compared_row_by_row() {
    let cmp = |a: &dyn Array, b: &dyn Array, cased: bool| -> Vec<bool> {
        compare_columns(a, b, cased).unwrap().iter().collect()
    };
    let left = strings(&[
        Some("Bob"),
        Some("bob"),
        Some("x"),
        None,
        Some(""),
        Some("a"),
    ]);
    let right = StringViewArray::from(vec![
        Some("bob"),
        Some("bob"),
        Some("y"),
        None,
        Some(""),
        None,
    ]);
    assert_eq!(cmp(&left, &right, false), [T, T, F, F, T, F]);
    assert_eq!(cmp(&left, &right, true), [F, T, F, F, T, F]);
    // Numbers by value, whatever their types.
    let ints = Int32Array::from(vec![Some(1), Some(2), Some(3), None]);
    let floats = Float64Array::from(vec![Some(1.0), Some(2.5), Some(f64::NAN), Some(1.0)]);
    assert_eq!(cmp(&ints, &floats, false), [T, F, F, F]);
    let unsigned = UInt64Array::from(vec![u64::MAX, 5]);
    let signed = Int64Array::from(vec![-1, 5]);
    assert_eq!(cmp(&unsigned, &signed, false), [F, T]);
    // A string and a number by the number's text.
    let texts = strings(&[Some("1"), Some("2.5"), Some("03"), Some("1.0")]);
    assert_eq!(cmp(&texts, &floats, false), [T, T, F, F]);
    // Booleans by value, or by text against strings; never equal to a number.
    let bools = BooleanArray::from(vec![true, false, true]);
    let words = strings(&[Some("TRUE"), Some("false"), Some("1")]);
    assert_eq!(cmp(&bools, &words, false), [T, T, F]);
    assert_eq!(cmp(&words, &bools, true), [F, T, F]);
    assert_eq!(
        cmp(&bools, &Int64Array::from(vec![1, 0, 1]), false),
        [F, F, F]
    );
    assert_eq!(
        cmp(&bools, &BooleanArray::from(vec![true, true, true]), false),
        [T, F, T]
    );
    let dates = Date32Array::from(vec![1]);
    let e = compare_columns(&strings(&[Some("x")]), &dates, false).unwrap_err();
    assert_eq!(e.data_type, DataType::Date32);
}

#[test]
fn keywords_are_substring_searches() {
    let mut b = ColumnMatcherBuilder::new();
    for (slot, kw) in ["'mimikatz'", "'sekurlsa::*'", "'*'"].iter().enumerate() {
        let m = field_matcher("F", kw);
        b.add_keyword(slot, &m.values[0].variants[0]).unwrap();
    }
    let m = b.build().unwrap();
    let rows = strings(&[
        Some("run MimiKatz now"),
        Some("x sekurlsa::logonpasswords"),
        None,
    ]);
    assert_eq!(
        to_rows(&m.evaluate(&rows).unwrap()),
        [vec![T, F, F], vec![F, T, F], vec![T, T, F]]
    );
}

#[test]
fn glob_backtracks_only_as_needed() {
    let parts = |p: &str| -> Vec<Glob> {
        p.chars()
            .map(|c| match c {
                '*' => Glob::Any,
                '?' => Glob::One,
                c => Glob::Lit(c.to_string().into()),
            })
            .collect()
    };
    assert!(glob_match(&parts("*ab*ab"), "xabyab", false));
    assert!(glob_match(&parts("*ab"), "aab", false));
    assert!(!glob_match(&parts("*ab*ab"), "xaby", false));
    assert!(glob_match(&parts("a*?"), "a\u{e9}", false));
    assert!(!glob_match(&parts("a*??"), "a\u{e9}", false));
    // Long text, many stars: linear enough to finish at once.
    let text = "a".repeat(5000);
    assert!(!glob_match(&parts("*a*a*a*a*b"), &text, false));
}

/// Letters outside ASCII: each case variant is a literal of the automaton (or tries), not a
/// regex run on every row; past [`MAX_CASE_VARIANTS`] variants, a regex still matches.
#[test]
fn letters_outside_ascii_are_matched_by_their_case_variants() {
    // Cyrillic homoglyphs (as SigmaHQ's homoglyph rule writes them) and a word.
    let entries = [("F|contains", "['А', 'В']"), ("F", "'arrêté'")];
    let m = build(&entries);
    assert!(m.describe().contains(" 0 regexes"), "{}", m.describe());
    // `А` (U+0410) and its lower case `а` (U+0430), Cyrillic, not the ASCII `A`.
    let rows = strings(&[
        Some("\u{410}pple"),
        Some("x\u{430}y"),
        Some("Apple"),
        Some("ARRÊTÉ"),
        Some("arrete"),
        Some("в"),
    ]);
    let got = hits(&entries, &rows);
    assert_eq!(got, [[T, T, F, F, F, T], [F, F, F, T, F, F]]);
    // Σ has three forms, Μ three (with the micro sign): 72 variants, a regex.
    let m = build(&[("F", "'ΣΊΓΜΑ'")]);
    assert!(m.describe().contains(" 1 regexes"), "{}", m.describe());
    assert_eq!(
        hits(
            &[("F", "'ΣΊΓΜΑ'")],
            &strings(&[Some("σίγμα"), Some("sigma")])
        ),
        [[T, F]]
    );
}

/// A column with few scanned literals finds the first of them with a packed (SIMD) search
/// over the row's folded bytes and runs the automaton from there; with more than
/// [`MAX_PACKED_LITERALS`] starts, the automaton scans every row.
#[test]
fn a_few_scanned_literals_are_found_by_a_packed_search_first() {
    let few = [
        ("F|contains", "['mimikatz', 'sekurlsa::', 'lsadump']"),
        // Values on one slot are alternatives (the plan links `|all` ones).
        ("F|contains", "['lsa', 'dump']"),
    ];
    assert!(build(&few).describe().contains("(packed search first)"));
    // Rows longer than the SIMD search's minimum (shorter ones take its scalar path), with
    // the literals at the start, the end, overlapping, in another case, and absent.
    let filler = "x".repeat(80);
    let rows = [
        format!("MIMIKATZ {filler}"),
        format!("{filler} sekurlsa::"),
        format!("{filler}lsadumpx"),
        format!("{filler}lsa{filler}DUMP"),
        filler.clone(),
        "lsa".to_string(),
    ];
    let array = StringArray::from(rows.iter().map(|r| Some(r.as_str())).collect::<Vec<_>>());
    assert_eq!(hits(&few, &array), [[T, T, T, F, F, F], [F, T, T, T, F, T]]);
    // 65 literals with distinct starts (tests cut starts at two bytes).
    let many: Vec<String> = (0..65u8)
        .map(|i| {
            format!(
                "'{}{}z'",
                char::from(b'a' + i / 26),
                char::from(b'a' + i % 26)
            )
        })
        .collect();
    let many = format!("[{}]", many.join(", "));
    let m = build(&[("F|contains", many.as_str())]);
    assert!(!m.describe().contains("packed"), "{}", m.describe());
}

/// A value repeated in a batch is matched once; the other rows copy its slots. A column of
/// mostly distinct values stops looking values up after a probe, and every row is matched.
#[test]
fn a_value_repeated_in_the_batch_is_matched_once() {
    let entries = [
        ("F|endswith", "'.exe'"),
        ("F|contains", "'cmd'"),
        ("F", "'x'"),
        ("F|re", "'^C:'"),
    ];
    let m = build(&entries);
    let values = [Some(r"C:\cmd.exe"), Some("x"), None, Some("other")];
    let rows: Vec<Option<&str>> = (0..1000).map(|i| values[i % 4]).collect();
    let array = strings(&rows);
    assert_eq!(m.values_matched(&array), 3);
    let one_by_one: Vec<Vec<bool>> = (0..entries.len())
        .map(|slot| {
            rows.iter()
                .map(|r| hits(&entries, &strings(&[*r]))[slot][0])
                .collect()
        })
        .collect();
    assert_eq!(hits(&entries, &array), one_by_one);

    // 300 distinct values, then repeats: past the probe, nothing is remembered any more.
    let distinct: Vec<String> = (0..1000)
        .map(|i| format!(r"C:\dir{}\cmd.exe", i % 300))
        .collect();
    let array = StringArray::from(
        distinct
            .iter()
            .map(|s| Some(s.as_str()))
            .collect::<Vec<_>>(),
    );
    assert_eq!(m.values_matched(&array), 1000);
    assert_eq!(
        hits(&entries, &array),
        [vec![T; 1000], vec![T; 1000], vec![F; 1000], vec![T; 1000]]
    );
}

// ---- differential property test ----

/// A pattern piece as generated: small alphabets so that literals collide often.
fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        3 => "[aAbBéÉ.\\\\]{1,3}".prop_map(Part::Literal),
        1 => Just(Part::AnyChars),
        1 => Just(Part::OneChar),
    ]
}

fn pattern() -> impl Strategy<Value = Pattern> {
    (prop::collection::vec(part(), 0..6), any::<bool>()).prop_map(|(parts, case_sensitive)| {
        Pattern {
            parts,
            case_sensitive,
        }
    })
}

/// The reference: the pattern as an anchored regex, tried row by row.
fn reference(p: &Pattern) -> regex::Regex {
    let mut re = String::from(if p.case_sensitive { "(?s)^" } else { "(?si)^" });
    for part in &p.parts {
        match part {
            Part::Literal(s) => re.push_str(&regex::escape(s)),
            Part::AnyChars => re.push_str(".*"),
            Part::OneChar => re.push('.'),
            Part::Placeholder(_) => unreachable!(),
        }
    }
    re.push('$');
    regex::Regex::new(&re).unwrap()
}

proptest! {
    #![proptest_config(crate::proptest_config(256))]

    #[test]
    fn vectorised_patterns_agree_with_a_regex_per_row(
        patterns in prop::collection::vec(pattern(), 1..8),
        rows in prop::collection::vec(
            prop::option::weighted(0.9, "[aAbB.\\\\\u{e9}\u{c9}x]{0,8}"), 0..40),
    ) {
        let mut b = ColumnMatcherBuilder::new();
        for (slot, p) in patterns.iter().enumerate() {
            b.add(slot, &Value::Pattern(p.clone())).unwrap();
        }
        let m = b.build().unwrap();
        let array = StringArray::from(rows.clone());
        let got = to_rows(&m.evaluate(&array).unwrap());
        for (slot, p) in patterns.iter().enumerate() {
            let re = reference(p);
            let want: Vec<bool> = rows
                .iter()
                .map(|r| r.as_deref().is_some_and(|s| re.is_match(s)))
                .collect();
            prop_assert_eq!(&got[slot], &want, "pattern {} ({:?})", p, p);
        }
    }
}

proptest! {
    #![proptest_config(crate::proptest_config(256))]

    /// Long rows (the packed search's SIMD path, not only its scalar one for short rows):
    /// `contains` and other patterns agree with the regex reference, and a slot is reported
    /// set exactly when one of its rows is.
    #[test]
    fn long_rows_agree_with_a_regex_per_row(
        patterns in prop::collection::vec(pattern(), 1..8),
        rows in prop::collection::vec(
            prop::option::weighted(0.9, "[aAbB.\\\\\u{e9}\u{c9}xyz ]{0,120}"), 0..40),
    ) {
        let mut b = ColumnMatcherBuilder::new();
        for (slot, p) in patterns.iter().enumerate() {
            b.add(slot, &Value::Pattern(p.clone())).unwrap();
        }
        let m = b.build().unwrap();
        let array = StringArray::from(rows.clone());
        let slots = m.evaluate_masked(&array, None).unwrap();
        for (slot, p) in patterns.iter().enumerate() {
            let re = reference(p);
            let want: Vec<bool> = rows
                .iter()
                .map(|r| r.as_deref().is_some_and(|s| re.is_match(s)))
                .collect();
            let got: Vec<bool> = slots.bits[slot].iter().collect();
            prop_assert_eq!(&got, &want, "pattern {} ({:?})", p, p);
            prop_assert_eq!(slots.set[slot], want.contains(&true));
        }
    }
}

/// A regex piece: literals (so that prefilters exist), classes, repetitions, anchors.
fn regex_piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "abc",
        "xyz",
        "a.c",
        ".",
        ".*",
        "[a-c]+",
        "(?:abc|xyz)",
        r"\d+",
        "^",
        "$",
        "(?i:ab)",
        r"\bab",
        "b?",
        "(?:xy)*",
        "é",
    ])
}

proptest! {
    #![proptest_config(crate::proptest_config(256))]

    /// The literal prefilter never hides a regex match: same answers as the regex alone.
    #[test]
    fn regex_prefilter_agrees_with_the_regex(
        pieces in prop::collection::vec(regex_piece(), 1..5),
        flags in (any::<bool>(), any::<bool>(), any::<bool>()),
        rows in prop::collection::vec("[abcxyzABCÉé.\n0-9 ]{0,12}", 0..30),
    ) {
        let r = crate::detect::sigma::value::Regex {
            pattern: pieces.concat(),
            case_insensitive: flags.0,
            multi_line: flags.1,
            dot_all: flags.2,
        };
        let mut b = ColumnMatcherBuilder::new();
        b.add(0, &Value::Regex(r.clone())).unwrap();
        let m = b.build().unwrap();
        let reference = compile_regex(&r).unwrap();
        let array = StringArray::from(rows.clone());
        let got = to_rows(&m.evaluate(&array).unwrap()).remove(0);
        let want: Vec<bool> = rows.iter().map(|t| reference.is_match(t)).collect();
        prop_assert_eq!(got, want, "{:?}", r);
    }
}

/// Rough throughput of one column pass: not an assertion on speed (debug builds, shared
/// machine), but run with `--ignored --nocapture` to print it.
#[test]
#[ignore = "prints a throughput figure; run on demand"]
fn throughput() {
    let rules: Vec<(String, String)> = (0..200)
        .map(|i| match i % 4 {
            0 => ("F|contains".into(), format!("'needle{i}'")),
            1 => ("F|endswith".into(), format!("'\\tool{i}.exe'")),
            2 => ("F|startswith".into(), format!("'C:\\dir{i}\\'")),
            _ => ("F".into(), format!("'*\\x{i}\\a*.dll'")),
        })
        .collect();
    let entries: Vec<(&str, &str)> = rules
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let m = build(&entries);
    let rows: Vec<String> = (0..8192)
        .map(|i| {
            format!(
                "C:\\Windows\\System32\\cmd.exe /c echo {i} && powershell -nop -w hidden needle{}",
                i % 300
            )
        })
        .collect();
    let array = StringArray::from(rows.iter().map(String::as_str).collect::<Vec<_>>());
    let bytes: usize = rows.iter().map(String::len).sum();
    let start = std::time::Instant::now();
    let passes = 20;
    let mut set = 0;
    for _ in 0..passes {
        set += m
            .evaluate(&array)
            .unwrap()
            .iter()
            .map(BooleanBuffer::count_set_bits)
            .sum::<usize>();
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(set > 0);
    println!(
        "{} rows x {passes} passes, 200 patterns: {:.0} rows/s, {:.1} MB/s",
        rows.len(),
        (rows.len() * passes) as f64 / secs,
        (bytes * passes) as f64 / secs / 1e6
    );
}
