//! The formula language as a specification: what evaluates to what, and what is refused where.

use super::*;

/// Variable values of a table row.
type Vars = &'static [(&'static str, f64)];

fn values(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn eval_str(formula: &str, vars: &[(&str, f64)]) -> Result<f64> {
    Formula::parse(formula)?.evaluate(&values(vars))
}

#[test]
fn evaluates_what_kedas_docs_and_expr_lang_define() {
    const AB: Vars = &[("a", 3.0), ("b", 5.0)];
    #[rustfmt::skip]
    let cases: &[(&str, Vars, f64)] = &[
        // KEDA's scaling modifiers docs.
        ("(trig_one + trig_two)/2", &[("trig_one", 4.0), ("trig_two", 8.0)], 6.0),
        ("trig_one > 2 ? trig_one + trig_two : 1", &[("trig_one", 3.0), ("trig_two", 1.0)], 4.0),
        ("trig_one > 2 ? trig_one + trig_two : 1", &[("trig_one", 2.0), ("trig_two", 1.0)], 1.0),
        ("trig_one < 2 ? trig_one + trig_two >= 2 ? 5 : 10 : 0", &[("trig_one", 1.0), ("trig_two", 1.0)], 5.0),
        ("trig_one < 2 ? trig_one + trig_two >= 2 ? 5 : 10 : 0", &[("trig_one", 1.0), ("trig_two", 0.5)], 10.0),
        ("trig_one < 2 ? trig_one + trig_two >= 2 ? 5 : 10 : 0", &[("trig_one", 2.0), ("trig_two", 0.0)], 0.0),
        // Precedence and associativity.
        ("1 + 2 * 3", &[], 7.0),
        ("(1 + 2) * 3", &[], 9.0),
        ("10 - 4 - 3", &[], 3.0),
        ("24 / 4 / 2", &[], 3.0),
        ("2 * 3 % 4", &[], 2.0),
        ("-2 * 3", &[], -6.0),
        ("- -2", &[], 2.0),
        ("+3", &[], 3.0),
        ("1 + 2 > 2 ? 1 : 0", &[], 1.0),
        ("1 < 2 && 3 < 4 ? 1 : 0", &[], 1.0),
        ("false || true && false ? 1 : 0", &[], 0.0),
        ("true || false && false ? 1 : 0", &[], 1.0),
        ("a > 1 ? 1 : b > 1 ? 2 : 3", &[("a", 0.0), ("b", 2.0)], 2.0),
        // Integer and float semantics of expr-lang.
        ("7 / 2", &[], 3.5),
        ("7 % 3", &[], 1.0),
        ("-7 % 3", &[], -1.0),
        ("1 == 1.0 ? 1 : 0", &[], 1.0),
        ("true != false ? 1 : 0", &[], 1.0),
        ("1_000 + 1e3 + 2.5e-1", &[], 2000.25),
        ("9223372036854775807", &[], 9_223_372_036_854_775_807.0),
        // Words as operators.
        ("not (1 > 2) and 2 > 1 ? 1 : 0", &[], 1.0),
        ("!(1 > 2) ? 1 : 0", &[], 1.0),
        ("1 > 2 or 2 > 1 ? 1 : 0", &[], 1.0),
        // Functions.
        ("min(a, b, 4)", AB, 3.0),
        ("max(a, b)", AB, 5.0),
        ("max(2)", &[], 2.0),
        ("min(3, 1.5)", &[], 1.5),
        ("abs(a - b)", AB, 2.0),
        ("abs(-4)", &[], 4.0),
        ("ceil(a / 2)", AB, 2.0),
        ("floor(b / 2)", AB, 2.0),
        ("ceil(-0.5)", &[], -0.0),
        // Layout does not matter.
        ("a +\n\tb", AB, 8.0),
        ("  max( a ,b )  ", AB, 5.0),
    ];
    for (formula, vars, expected) in cases {
        let got = eval_str(formula, vars);
        assert_eq!(got, Ok(*expected), "{formula:?} with {vars:?}");
    }
}

#[test]
fn refuses_what_it_does_not_support_naming_it_and_its_column() {
    #[rustfmt::skip]
    let cases: &[(&str, usize, &str)] = &[
        ("", 1, "expected a number, a trigger name, a function call or `(`, found the end"),
        ("1 +", 4, "found the end of the formula"),
        ("a b", 3, "expected an operator or the end of the formula, found `b`"),
        ("(1 + 2", 7, "expected an operator or a closing `)`, found the end of the formula"),
        ("a > 1 ? 2", 10, "the `:` of the conditional"),
        ("a.b", 2, "member access `.` is not supported"),
        ("a?.b", 2, "optional chaining"),
        ("sqrt(a)", 1, "unknown function `sqrt`; supported: min, max, abs, ceil, floor"),
        ("len(a)", 1, "unknown function `len`"),
        ("len(\"x\")", 5, "string literals are not supported"),
        ("\"x\" + 1", 1, "string literals are not supported"),
        ("'x'", 1, "string literals are not supported"),
        ("a in b", 3, "the operator `in` is not supported"),
        ("a matches b", 3, "the operator `matches` is not supported"),
        ("in", 1, "the operator `in` is not supported"),
        ("let x", 1, "`let` is not supported"),
        ("a = 1", 3, "`=` is not supported"),
        ("a & b", 3, "`&` is not supported"),
        ("a | b", 3, "the pipe operator `|` is not supported"),
        ("1..3", 2, "ranges"),
        ("99999999999999999999", 1, "is too large"),
        ("1e999", 1, "is too large"),
        ("$env", 1, "`$env`"),
        ("a; b", 2, "several expressions"),
        ("é", 1, "unexpected character 'é'"),
        ("min()", 1, "`min` takes one or more arguments, got 0"),
        ("abs(1, 2)", 1, "`abs` takes exactly one argument, got 2"),
        ("max(1 2)", 7, "expected an operator or `,` or the closing `)` of `max(`, found the number `2`"),
        ("+", 2, "found the end of the formula"),
        (")", 1, "found `)`"),
        ("a ? : b", 3, "the condition before `?` must be a boolean"),
        // expr-lang has these; formulas over trigger values do not use them.
        ("a[0]", 2, "indexing (`a[0]`) is not supported"),
        ("[a][0]", 4, "indexing"),
        ("count([a], {#index > 1})", 13, "named pointers (`#index`, `#acc`) are not supported"),
        ("# > 1 ? 1 : 0", 1, "`#` is the element inside a predicate"),
        ("sum([a, b])", 1, "unknown function `sum`; supported: min, max, abs, ceil, floor, round, float, count"),
        ("a ?? b + 1", 8, "`+` cannot follow a `??` chain: wrap either in parentheses"),
        ("a ?? b ** 2", 8, "`**` cannot follow a `??` chain"),
        ("0x", 1, "invalid hexadecimal literal `0x`"),
        ("0x1.5", 1, "invalid hexadecimal literal `0x1.5`: integers only"),
        ("0b102", 1, "bad number syntax `0b102`"),
        ("0o8", 1, "bad number syntax `0o8`"),
        ("2x", 1, "bad number syntax `2x`"),
        ("1e", 1, "invalid float literal `1e`"),
        ("0x8000000000000000", 1, "invalid hexadecimal literal"),
        ("let x = 1; x", 7, "`=` is not supported"),
        ("{a: 1}", 1, "maps (`{`) are not supported"),
        ("count([a], {# > 1)", 18, "the closing `}` of the predicate"),
    ];
    for (formula, column, message) in cases {
        match Formula::parse(formula) {
            Ok(_) => panic!("{formula:?} parsed, expected an error containing {message:?}"),
            Err(e) => {
                assert!(
                    e.message.contains(message),
                    "{formula:?}: {e}; wanted {message:?}"
                );
                assert_eq!(e.column, *column, "{formula:?}: {e}");
            }
        }
    }
}

#[test]
fn type_errors_visible_without_values_are_parse_errors() {
    #[rustfmt::skip]
    let cases: &[(&str, usize, &str)] = &[
        ("1 > 2", 1, "produces a boolean, but KEDA needs a number"),
        ("a > 2 && b > 1", 1, "produces a boolean"),
        ("true + 1", 6, "`+` needs numbers, but its left operand is a boolean"),
        ("1 - (2 > 1)", 3, "its right operand is a boolean"),
        ("-true", 1, "`-` needs numbers, but its operand is a boolean"),
        ("!a ? 1 : 0", 1, "`!` needs booleans (a comparison such as `a > 2`), but its operand is a float"),
        ("a && b ? 1 : 0", 3, "`&&` needs booleans"),
        ("1 ? 2 : 3", 3, "the condition before `?` must be a boolean"),
        ("a ? 2 : 3", 3, "but it is a float"),
        ("1 == true ? 1 : 0", 3, "`==` compares an integer with a boolean"),
        ("a < true ? 1 : 0", 3, "`<` needs numbers"),
        ("max(a, 1 > 2)", 1, "`max` needs numbers, but its argument 2 is a boolean"),
        ("ceil(true)", 1, "its argument 1 is a boolean"),
        // `%` takes integers; trigger values, `/`, `ceil` and `floor` are floats.
        ("a % 2", 3, "`%` needs integers, but its left operand is a float"),
        ("10 % (4 / 2)", 4, "its right operand is a float"),
        ("ceil(5) % 2", 9, "its left operand is a float"),
    ];
    for (formula, column, message) in cases {
        match Formula::parse(formula) {
            Ok(_) => panic!("{formula:?} parsed, expected an error containing {message:?}"),
            Err(e) => {
                assert!(
                    e.message.contains(message),
                    "{formula:?}: {e}; wanted {message:?}"
                );
                assert_eq!(e.column, *column, "{formula:?}: {e}");
            }
        }
    }
}

#[test]
fn evaluation_errors_name_the_cause_instead_of_producing_inf_or_nan() {
    #[rustfmt::skip]
    let cases: &[(&str, Vars, usize, &str)] = &[
        ("a / b", &[("a", 1.0), ("b", 0.0)], 3, "division by zero"),
        ("1 / 0", &[], 3, "division by zero"),
        ("0 / 0.0", &[], 3, "division by zero"),
        ("1 % 0", &[], 3, "modulo by zero"),
        ("a * b", &[("a", 1e200), ("b", 1e200)], 3, "`*` overflows"),
        ("a - b", &[("a", -1.7e308), ("b", 1.7e308)], 3, "`-` overflows"),
        ("9223372036854775807 + 1", &[], 21, "`+` overflows the integer range"),
        ("-(-9223372036854775807 - 1)", &[], 1, "`-` overflows"),
        ("abs(-9223372036854775807 - 1)", &[], 1, "`abs` overflows"),
        ("(-9223372036854775807 - 1) % -1", &[], 28, "`%` overflows"),
        ("x + 1", &[("a", 1.0), ("b", 2.0)], 1, "unknown variable `x`; the formula can use the trigger names `a`, `b`"),
        ("a", &[("a", f64::NAN)], 1, "the value of `a` is NaN, not a finite number"),
        ("a", &[("a", f64::INFINITY)], 1, "is inf, not a finite number"),
        ("a > 1 ? 1 : true", &[("a", 0.0)], 1, "produced a boolean"),
        ("(a > 1 ? 1 : true) + 1", &[("a", 0.0)], 20, "`+` needs numbers, but its left operand is a boolean"),
        ("(a > 1 ? 1 : false) || true ? 1 : 0", &[("a", 2.0)], 21, "`||` needs booleans"),
        ("(a > 1 ? 1.5 : 2) % 2", &[("a", 2.0)], 19, "`%` needs integers"),
    ];
    for (formula, vars, column, message) in cases {
        match eval_str(formula, vars) {
            Ok(v) => panic!("{formula:?} gave {v}, expected an error containing {message:?}"),
            Err(e) => {
                assert!(
                    e.message.contains(message),
                    "{formula:?}: {e}; wanted {message:?}"
                );
                assert_eq!(e.column, *column, "{formula:?}: {e}");
            }
        }
    }
}

#[test]
fn logic_short_circuits_so_an_untaken_side_cannot_fail() {
    #[rustfmt::skip]
    let cases: &[(&str, f64, f64)] = &[
        ("a > 0 || 1 / 0 > 1 ? 1 : 0", 1.0, 1.0),
        ("a > 0 && 1 / 0 > 1 ? 1 : 0", 0.0, 0.0),
        ("a > 0 ? 7 : 1 / 0", 1.0, 7.0),
        ("a > 0 ? 1 / 0 : 7", 0.0, 7.0),
    ];
    for (formula, a, expected) in cases {
        assert_eq!(
            eval_str(formula, &[("a", *a)]),
            Ok(*expected),
            "{formula:?}"
        );
    }
}

#[test]
fn variables_are_checked_against_the_trigger_names() {
    let formula = Formula::parse("b + max(a, c) + b").unwrap();
    assert_eq!(formula.variables(), vec!["a", "b", "c"]);
    assert_eq!(formula.check_variables(&["a", "b", "c"]), Ok(()));
    let e = formula.check_variables(&["a", "b"]).unwrap_err();
    assert_eq!(e.column, 12, "{e}");
    assert!(
        e.message
            .contains("unknown variable `c`; the formula can use the trigger names `a`, `b`"),
        "{e}"
    );
    let e = formula.check_variables(&[]).unwrap_err();
    assert!(e.message.contains("no trigger has a `name`"), "{e}");
    assert_eq!(
        Formula::parse("1 + 2").unwrap().variables(),
        Vec::<&str>::new()
    );
}

#[test]
fn keeps_its_source_for_display() {
    let formula: Formula = "(a + b) / 2".parse().unwrap();
    assert_eq!(formula.source(), "(a + b) / 2");
    assert_eq!(formula.to_string(), "(a + b) / 2");
    let e = Formula::parse("a +").unwrap_err();
    assert_eq!(e.to_string(), format!("column 4: {}", e.message));
}

#[test]
fn nesting_is_bounded_so_no_input_overflows_the_stack() {
    let deep_parens = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    let long_sum = format!("1{}", "+1".repeat(100_000));
    let many_minus = format!("{}1", "-".repeat(100_000));
    let many_not = format!("{}true ? 1 : 0", "!".repeat(100_000));
    let ternary_chain = format!("{}0", "a > 1 ? 1 : ".repeat(10_000));
    let nested_calls = format!("{}1{}", "max(".repeat(10_000), ")".repeat(10_000));
    for formula in [
        &deep_parens,
        &long_sum,
        &many_minus,
        &many_not,
        &ternary_chain,
        &nested_calls,
    ] {
        let e = Formula::parse(formula).unwrap_err();
        assert!(e.message.contains("nested too deeply"), "{e}");
    }
    // Realistic nesting is far below the bound.
    let thirty = format!("{}a{}", "(".repeat(30), " + 1)".repeat(30));
    assert_eq!(eval_str(&thirty, &[("a", 1.0)]), Ok(31.0));
    let wide = format!("max({})", vec!["a"; 10_000].join(", "));
    assert_eq!(eval_str(&wide, &[("a", 2.0)]), Ok(2.0));
    // Chained comparisons copy their shared operands; nesting them cannot blow the tree up.
    let mut chain = "a".to_string();
    for _ in 0..25 {
        chain = format!("(a < ({chain} ? 1 : 0) < 2)");
    }
    let e = Formula::parse(&format!("{chain} ? 1 : 0")).unwrap_err();
    assert!(
        e.message.contains("too large") || e.message.contains("nested too deeply"),
        "{e}"
    );
}

/// A tiny deterministic generator (xorshift64*), so the fuzz-like test needs no dependency and
/// fails reproducibly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parses, checks and evaluates `formula`, asserting only what must hold for every input: no
/// panic (the test harness would report it), finite results, errors pointing inside the text.
fn never_panics_on(formula: &str, vars: &BTreeMap<String, f64>) {
    let columns = formula.chars().count() + 1;
    match Formula::parse(formula) {
        Err(e) => assert!((1..=columns).contains(&e.column), "{formula:?}: {e}"),
        Ok(parsed) => {
            let _ = parsed.variables();
            let _ = parsed.check_variables(&["a", "b"]);
            match parsed.evaluate(vars) {
                Ok(v) => assert!(v.is_finite(), "{formula:?} gave {v}"),
                Err(e) => assert!((1..=columns).contains(&e.column), "{formula:?}: {e}"),
            }
            let _ = parsed.check_admission(&["a", "b"]);
            let with_nil = vars
                .iter()
                .map(|(k, v)| (k.clone(), (*v != 1.0).then_some(*v)));
            match parsed.evaluate_nullable(&with_nil.collect()) {
                Ok(v) => assert!(v.is_none_or(f64::is_finite), "{formula:?} gave {v:?}"),
                Err(e) => assert!((1..=columns).contains(&e.column), "{formula:?}: {e}"),
            }
        }
    }
}

#[test]
fn random_inputs_never_panic() {
    const CHARS: &[char] = &[
        'a', 'b', '_', '0', '1', '9', '.', 'e', '+', '-', '*', '/', '%', '<', '>', '=', '!', '&',
        '|', '?', ':', '(', ')', ',', ' ', '"', '[', ']', '{', '}', '#', '$', ';', '^', 'é', '\n',
        '\0', 'x', 'E',
    ];
    const TOKENS: &[&str] = &[
        "a",
        "b",
        "c",
        "1",
        "0",
        "2.5",
        "0.0",
        "1e308",
        "9223372036854775807",
        "(",
        ")",
        "+",
        "-",
        "*",
        "/",
        "%",
        "?",
        ":",
        "<",
        ">=",
        "==",
        "!=",
        "&&",
        "||",
        "!",
        "not",
        "and",
        "or",
        "min(",
        "max(",
        "abs(",
        "ceil(",
        "floor(",
        ",",
        "true",
        "false",
        " ",
        "in",
        "nil",
        "??",
        "**",
        "^",
        "[",
        "]",
        "{",
        "}",
        "#",
        "count(",
        "round(",
        "float(",
        "0x1F",
        ".5",
        "//",
        "/*",
        "*/",
    ];
    let value_choices = [0.0, 1.0, -1.0, 0.5, 1e308, -1e308, 3.0];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let vars = values(&[
            ("a", value_choices[rng.below(value_choices.len())]),
            ("b", value_choices[rng.below(value_choices.len())]),
        ]);
        let chars: String = (0..rng.below(24))
            .map(|_| CHARS[rng.below(CHARS.len())])
            .collect();
        never_panics_on(&chars, &vars);
        let tokens: String = (0..rng.below(16))
            .map(|_| TOKENS[rng.below(TOKENS.len())])
            .collect::<Vec<_>>()
            .join(if rng.below(2) == 0 { " " } else { "" });
        never_panics_on(&tokens, &vars);
    }
}
