//! Cases taken from the projects KEDA's formulas come from, each with the file and line it
//! was read at: expr-lang/expr v1.17.8 (the version KEDA pins) and kedacore/keda 2.20. They
//! check the value *and its type* (an integer stays an integer), so a divergence from
//! expr-lang shows up even where the replica count would not change.

use super::*;

use ast::Value::{self, Bool, Float, Int, Nil};

/// Parses, checks and evaluates `formula` without KEDA's float conversion of the result, so
/// booleans and integers come back as expr-lang gives them.
fn run(formula: &str, vars: Vars) -> Result<Value> {
    let tokens = lex(formula)?;
    let mut parser = Parser::new(&tokens);
    let root = parser.parse_expression(0)?;
    let end = parser.peek();
    if end.kind != TokenKind::End {
        return Err(unexpected_after_operand(end, "the end of the formula"));
    }
    check(&root)?;
    let values: BTreeMap<String, Option<f64>> =
        vars.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    eval(
        &root,
        Scope {
            values: &values,
            element: None,
        },
    )
}

/// Trigger values of a case; `None` is a trigger that could not be read.
type Vars<'a> = &'a [(&'a str, Option<f64>)];

const NONE: Vars = &[];

#[test]
fn expr_lang_expr_test_go() {
    #[rustfmt::skip]
    let cases: &[(&str, Value, &str)] = &[
        ("1", Int(1), "expr_test.go:775"),
        ("-.5", Float(-0.5), "expr_test.go:779"),
        ("true && false || false", Bool(false), "expr_test.go:783"),
        ("2 + 2 == 4", Bool(true), "expr_test.go:839"),
        ("8 % 3", Int(2), "expr_test.go:843"),
        ("2 ** 8", Float(256.0), "expr_test.go:847"),
        ("2 ^ 8", Float(256.0), "expr_test.go:851"),
        ("-(2-5)**3-2/(+4-3)+-2", Float(23.0), "expr_test.go:855"),
        ("max([1, 2, 3])", Int(3), "expr_test.go:987"),
        ("max(1, 2, 3)", Int(3), "expr_test.go:991"),
        ("min([1, 2, 3])", Int(1), "expr_test.go:995"),
        ("min(1, 2, 3)", Int(1), "expr_test.go:999"),
        ("(true ? 0+1 : 2+3) + (false ? -1 : -2)", Int(-1), "expr_test.go:1011"),
        ("count([true, true, false])", Int(2), "expr_test.go:1031"),
        ("1 + 1", Int(2), "expr_test.go:1043"),
        ("1 /* one */ + 2 // two", Int(3), "expr_test.go:1231"),
        ("2^3 == 8", Bool(true), "expr_test.go:1319"),
        ("4/2 == 2", Bool(true), "expr_test.go:1323"),
        ("1 > 2 < 3", Bool(false), "expr_test.go:1383"),
        ("1 < 2 < 3", Bool(true), "expr_test.go:1387"),
        ("1 < 2 < 3 > 4", Bool(false), "expr_test.go:1391"),
        ("1 < 2 < 3 > 2", Bool(true), "expr_test.go:1395"),
        ("1 < 2 < 3 == true", Bool(true), "expr_test.go:1399"),
    ];
    for (formula, expected, at) in cases {
        assert_eq!(
            run(formula, NONE).as_ref(),
            Ok(expected),
            "{formula:?} ({at})"
        );
    }
}

#[test]
fn expr_lang_builtin_test_go() {
    let x = &[("x", Some(42.0))];
    #[rustfmt::skip]
    let cases: &[(&str, Vars, Value, &str)] = &[
        ("abs(-5)", NONE, Int(5), "builtin/builtin_test.go:46"),
        ("abs(.5)", NONE, Float(0.5), "builtin/builtin_test.go:47"),
        ("abs(-.5)", NONE, Float(0.5), "builtin/builtin_test.go:48"),
        ("ceil(5.5)", NONE, Float(6.0), "builtin/builtin_test.go:49"),
        ("ceil(5)", NONE, Float(5.0), "builtin/builtin_test.go:50"),
        ("floor(5.5)", NONE, Float(5.0), "builtin/builtin_test.go:51"),
        ("floor(5)", NONE, Float(5.0), "builtin/builtin_test.go:52"),
        ("round(5.5)", NONE, Float(6.0), "builtin/builtin_test.go:53"),
        ("round(5)", NONE, Float(5.0), "builtin/builtin_test.go:54"),
        ("round(5.49)", NONE, Float(5.0), "builtin/builtin_test.go:55"),
        ("float(5)", NONE, Float(5.0), "builtin/builtin_test.go:59"),
        ("float(5.5)", NONE, Float(5.5), "builtin/builtin_test.go:60"),
        ("max(1, 2, 3)", NONE, Int(3), "builtin/builtin_test.go:86"),
        ("max(1.5, 2.5, 3.5)", NONE, Float(3.5), "builtin/builtin_test.go:87"),
        ("max([1, 2, 3])", NONE, Int(3), "builtin/builtin_test.go:88"),
        ("max([1.5, 2.5, 3.5])", NONE, Float(3.5), "builtin/builtin_test.go:89"),
        ("max([1, 2, 4, 10], 20, [29, 23, -19])", NONE, Int(29), "builtin/builtin_test.go:90"),
        ("min([1, 2, 4, 10], 20, [29, 23, -19])", NONE, Int(-19), "builtin/builtin_test.go:91"),
        ("min(1, 2, 3)", NONE, Int(1), "builtin/builtin_test.go:92"),
        ("min(1.5, 2.5, 3.5)", NONE, Float(1.5), "builtin/builtin_test.go:93"),
        ("min([1, 2, 3])", NONE, Int(1), "builtin/builtin_test.go:94"),
        ("min([1.5, 2.5, 3.5])", NONE, Float(1.5), "builtin/builtin_test.go:95"),
        ("min(-1, [1.5, 2.5, 3.5])", NONE, Int(-1), "builtin/builtin_test.go:96"),
        // builtin_test.go:103-108 flatten nested arrays.
        ("max([[1, 2], [3, 4]])", NONE, Int(4), "builtin/builtin_test.go:103"),
        ("min([[1, 2], [3, 4]])", NONE, Int(1), "builtin/builtin_test.go:104"),
        ("max([1, [2, 3], [4.0, 5.0]])", NONE, Float(5.0), "builtin/builtin_test.go:107"),
        ("min([1, [2, 3], [4.0, 5.0]])", NONE, Int(1), "builtin/builtin_test.go:108"),
        // `arr` is [1, 2, 3] and `x` 42 there; here `x` is a trigger value (a float).
        ("count([1, 2, 3], # > 0)", x, Int(3), "builtin/builtin_test.go:724"),
        ("ceil(x)", x, Float(42.0), "builtin/builtin_test.go:733"),
        ("floor(x)", x, Float(42.0), "builtin/builtin_test.go:734"),
        ("round(x)", x, Float(42.0), "builtin/builtin_test.go:735"),
        ("float(x)", x, Float(42.0), "builtin/builtin_test.go:737"),
        ("abs(x)", x, Float(42.0), "builtin/builtin_test.go:738"),
    ];
    for (formula, vars, expected, at) in cases {
        assert_eq!(
            run(formula, vars).as_ref(),
            Ok(expected),
            "{formula:?} ({at})"
        );
    }
    #[rustfmt::skip]
    let errors: &[(&str, &str)] = &[
        ("abs()", "builtin/builtin_test.go:253"),
        ("abs(1, 2)", "builtin/builtin_test.go:254"),
        ("float()", "builtin/builtin_test.go:258"),
        ("float(1, 2)", "builtin/builtin_test.go:259"),
        ("max()", "builtin/builtin_test.go:262"),
        ("min()", "builtin/builtin_test.go:265"),
    ];
    for (formula, at) in errors {
        assert!(run(formula, NONE).is_err(), "{formula:?} ({at})");
    }
}

#[test]
fn expr_lang_parser_test_go() {
    #[rustfmt::skip]
    let cases: &[(&str, Value, &str)] = &[
        ("0xFF", Int(255), "parser/parser_test.go:39"),
        ("0x6E", Int(110), "parser/parser_test.go:43"),
        ("0X63", Int(99), "parser/parser_test.go:47"),
        ("0o600", Int(384), "parser/parser_test.go:51"),
        ("0O45", Int(37), "parser/parser_test.go:55"),
        ("0b10", Int(2), "parser/parser_test.go:59"),
        ("0B101011", Int(43), "parser/parser_test.go:63"),
        ("10_000_000", Int(10_000_000), "parser/parser_test.go:67"),
        ("2.5", Float(2.5), "parser/parser_test.go:71"),
        ("1e9", Float(1e9), "parser/parser_test.go:75"),
        ("-3", Int(-3), "parser/parser_test.go:99"),
        // `-(2^2)`: the power binds tighter than the sign.
        ("-2^2", Float(-4.0), "parser/parser_test.go:104"),
        ("2**4-1", Float(15.0), "parser/parser_test.go:157"),
        ("+0 != -0", Bool(false), "parser/parser_test.go:260"),
    ];
    for (formula, expected, at) in cases {
        assert_eq!(
            run(formula, NONE).as_ref(),
            Ok(expected),
            "{formula:?} ({at})"
        );
    }
    // parser_test.go:509-540: `??` is left-associative, binds tighter than `||`, and takes a
    // parenthesised or called right side.
    let (foo, bar, baz) = (("foo", None), ("bar", Some(2.0)), ("baz", Some(3.0)));
    #[rustfmt::skip]
    let nil_cases: &[(&str, Vars, Value, &str)] = &[
        ("foo ?? bar", &[foo, bar], Float(2.0), "parser/parser_test.go:509"),
        ("foo ?? bar ?? baz", &[foo, ("bar", None), baz], Float(3.0), "parser/parser_test.go:515"),
        ("foo ?? (bar > 1 || baz > 1)", &[foo, bar, baz], Bool(true), "parser/parser_test.go:523"),
        // `foo || bar ?? baz` is `foo || (bar ?? baz)`; with numbers: `+`.
        ("1 + foo ?? bar", &[foo, bar], Float(3.0), "parser/parser_test.go:531"),
        ("foo ?? max(1, 2)", &[foo], Int(2), "parser/parser_test.go:539"),
    ];
    for (formula, vars, expected, at) in nil_cases {
        assert_eq!(
            run(formula, vars).as_ref(),
            Ok(expected),
            "{formula:?} ({at})"
        );
    }
    #[rustfmt::skip]
    let errors: &[(&str, &str)] = &[
        ("foo ?? bar || baz", "parser/parser_test.go:1018"),
        ("0b15", "parser/parser_test.go:1021"),
        ("0X10G", "parser/parser_test.go:1024"),
        ("0o1E", "parser/parser_test.go:1027"),
        ("0b1E", "parser/parser_test.go:1030"),
        ("0b1E+6", "parser/parser_test.go:1033"),
        ("1E", "parser/parser_test.go:1042"),
    ];
    let vars = &[foo, bar, baz];
    for (formula, at) in errors {
        assert!(run(formula, vars).is_err(), "{formula:?} ({at})");
    }
}

#[test]
fn expr_lang_checker_test_go() {
    // checker/checker_test.go, TestCheck: these type-check; `Float` is a float variable
    // there, as a trigger value is here.
    let float = &[("Float", Some(0.5))];
    #[rustfmt::skip]
    let cases: &[(&str, Value, &str)] = &[
        ("nil == nil", Bool(true), "checker/checker_test.go:27"),
        ("1 + 2 + Float + 3 + 4 < 0", Bool(false), "checker/checker_test.go:47"),
        ("-1 + +1 == 0", Bool(true), "checker/checker_test.go:49"),
        ("1 / 2 == 0", Bool(false), "checker/checker_test.go:50"),
        ("2**3 + 1 != 0", Bool(true), "checker/checker_test.go:51"),
        ("2^3 + 1 != 0", Bool(true), "checker/checker_test.go:52"),
        ("Float == 1", Bool(false), "checker/checker_test.go:53"),
        ("Float < 1.0", Bool(true), "checker/checker_test.go:54"),
        ("Float <= 1.0", Bool(true), "checker/checker_test.go:55"),
        ("Float > 1.0", Bool(false), "checker/checker_test.go:56"),
        ("Float >= 1.0", Bool(false), "checker/checker_test.go:57"),
        ("[1, 2, 3] == []", Bool(false), "checker/checker_test.go:74"),
    ];
    for (formula, expected, at) in cases {
        assert_eq!(
            run(formula, float).as_ref(),
            Ok(expected),
            "{formula:?} ({at})"
        );
    }
    // checker_test.go:1010-1015, TestCheck_dont_panic_on_nil_arguments_for_builtins: a
    // compile error, not a run-time one.
    for formula in ["abs(nil)", "float(nil)"] {
        let e = Formula::parse(formula).unwrap_err();
        assert!(
            e.message.contains("takes a number, not nil"),
            "{formula:?}: {e}"
        );
    }
}

/// expr-lang's run-time rules for nil (vm/runtime: `Equal` takes nil, the arithmetic and
/// ordering helpers panic on it) and KEDA's: a trigger past its failureThreshold is nil
/// (pkg/scaling/modifiers/formula.go, `scalingModifierTriggerValue`).
#[test]
fn nil_is_only_accepted_by_coalesce_and_equality() {
    let a_nil = &[("a", None), ("b", Some(4.0))];
    #[rustfmt::skip]
    let cases: &[(&str, Value)] = &[
        ("a ?? b", Float(4.0)),
        ("b ?? a", Float(4.0)),
        ("a ?? 8", Int(8)),
        ("a ?? nil", Nil),
        ("nil ?? nil", Nil),
        ("a == nil", Bool(true)),
        ("b != nil", Bool(true)),
        ("a == b", Bool(false)),
        ("(a ?? 0) + b", Float(4.0)),
        ("1 + a ?? 2", Int(3)),
        ("-a ?? 2", Int(-2)),
        ("min(a)", Nil),
        ("min([])", Nil),
        ("a == nil ? 1 : b", Int(1)),
        ("count([a, b], {# != nil})", Int(1)),
    ];
    for (formula, expected) in cases {
        assert_eq!(run(formula, a_nil).as_ref(), Ok(expected), "{formula:?}");
    }
    #[rustfmt::skip]
    let errors: &[(&str, usize, &str)] = &[
        ("a + 1", 3, "`+` needs numbers, but its left operand is nil (a trigger that could not be read is nil under `fallback.behavior: scalingModifiers`; give it a default with `??`"),
        ("a > 1 ? 1 : 0", 3, "`>` needs numbers, but its left operand is nil"),
        ("-a", 1, "`-` needs numbers, but its operand is nil"),
        ("!a", 1, "`!` needs booleans"),
        ("a ? 1 : 0", 3, "the condition before `?` must be a boolean"),
        ("float(a)", 1, "`float` needs numbers, but its argument is nil"),
        ("max(a, b)", 1, "`max` needs numbers or arrays of numbers, but its argument is nil"),
        ("count([a, b], {# > 1})", 18, "`>` needs numbers, but its left operand is nil"),
        ("count(a, {# > 1})", 1, "`count` takes an array (`[a, b]`), but its argument 1 is a float"),
        ("count(nil, {# > 1})", 1, "`count` needs an array, but its argument 1 is nil"),
    ];
    for (formula, column, message) in errors {
        match run(formula, a_nil) {
            Ok(v) => panic!("{formula:?} gave {v:?}, expected {message:?}"),
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

/// KEDA's formulas, from its webhook tests (apis/keda/v1alpha1/scaledobject_webhook_test.go),
/// its e2e tests and its unit tests, through [`Formula`] as KEDA runs them (a float result,
/// nil only with `??`).
#[test]
fn keda_formulas() {
    let one_two = |one: f64, two: f64| vec![("trig_one", Some(one)), ("trig_two", Some(two))];
    let wc = |w: f64, c: f64| vec![("workload_trig", Some(w)), ("cron_trig", Some(c))];
    type Case<'a> = (&'a str, Vec<(&'a str, Option<f64>)>, Option<f64>, &'a str);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("float(workload_trig + 1)", wc(2.0, 0.0), Some(3.0), "scaledobject_webhook_test.go:1047"),
        ("float(workload_trig < 5 ? cron_trig + workload_trig : 5)", wc(2.0, 3.0), Some(5.0), "scaledobject_webhook_test.go:1076"),
        ("float(workload_trig < 5 ? cron_trig + workload_trig : 5)", wc(6.0, 3.0), Some(5.0), "scaledobject_webhook_test.go:1076"),
        ("workload_trig < 5 ? cron_trig + workload_trig : 5", wc(1.0, 1.0), Some(2.0), "scaledobject_webhook_test.go:1119"),
        ("count([trig_one,trig_two],{#>1}) > 1 ? 5 : 0", one_two(2.0, 3.0), Some(5.0), "scaledobject_webhook_test.go:1158"),
        ("count([trig_one,trig_two],{#>1}) > 1 ? 5 : 0", one_two(2.0, 1.0), Some(0.0), "scaledobject_webhook_test.go:1158"),
        ("float(trig_one < 2 ? trig_one+trig_two >= 2 ? 5 : 10 : 0)", one_two(1.0, 1.0), Some(5.0), "scaledobject_webhook_test.go:1197"),
        ("float(float(trig_two < 5 ? trig_one + trig_two : 5))", one_two(1.0, 2.0), Some(3.0), "scaledobject_webhook_test.go:1236"),
        ("trig_one ?? trig_two ?? 5", vec![("trig_one", None), ("trig_two", None)], Some(5.0), "scaledobject_webhook_test.go:1526"),
        ("trigger1 + trigger2", vec![("trigger1", Some(2.0)), ("trigger2", Some(5.0))], Some(7.0), "pkg/scaling/modifiers/formula_test.go:237"),
        ("trigger1 ?? trigger2", vec![("trigger1", None), ("trigger2", None)], None, "pkg/scaling/modifiers/formula_test.go:293"),
        ("primary ?? secondary ?? 8", vec![("primary", Some(16.0)), ("secondary", Some(12.0))], Some(16.0), "tests/internals/fallback/fallback_scaling_modifiers_test.go:105"),
        ("primary ?? secondary ?? 8", vec![("primary", None), ("secondary", Some(12.0))], Some(12.0), "tests/internals/fallback/fallback_scaling_modifiers_test.go:150"),
        ("primary ?? secondary ?? 8", vec![("primary", None), ("secondary", None)], Some(8.0), "tests/internals/fallback/fallback_scaling_modifiers_test.go:153"),
    ];
    for (formula, vars, expected, at) in cases {
        let values = vars.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let got = Formula::parse(formula).and_then(|f| f.evaluate_nullable(&values));
        assert_eq!(got, Ok(expected), "{formula:?} ({at})");
    }
}

/// KEDA's admission webhook runs the formula with every trigger at -1
/// (apis/keda/v1alpha1/scaledobject_webhook.go, `validateScalingModifiersFormula`).
#[test]
fn admission_runs_the_formula_with_every_trigger_at_minus_one() {
    let names = &["a", "b"];
    let admitted = |f: &str| Formula::parse(f).unwrap().check_admission(names);
    assert_eq!(admitted("a + b"), Ok(()));
    // Go gives +Inf here, and KEDA admits it.
    assert_eq!(admitted("1 / (a + 1)"), Ok(()));
    // A nil result is refused by the float() KEDA wraps around a formula without `??`.
    let e = admitted("a > 0 ? a : nil").unwrap_err();
    assert!(e.message.contains("refuses nil"), "{e}");
    assert_eq!(admitted("a > 0 ? a : nil ?? nil"), Ok(()));
    let e = admitted("(a > 0 ? 1 : true) + 1").unwrap_err();
    assert!(e.message.contains("`+` needs numbers"), "{e}");
}
