//! KEDA's and the HPA's replica rules as a specification, one row per rule.

use super::*;
use crate::eval::{formula::Formula, scaledobject::MetricType};

/// An `AverageValue` trigger named `label`, activation target 0.
fn reading(label: &str, value: f64, target: f64) -> TriggerReading {
    TriggerReading {
        label: label.to_owned(),
        name: Some(label.to_owned()),
        value,
        target,
        activation_target: 0.0,
        metric_type: MetricType::AverageValue,
    }
}

impl TriggerReading {
    fn activation(mut self, activation_target: f64) -> Self {
        self.activation_target = activation_target;
        self
    }

    fn value_type(mut self) -> Self {
        self.metric_type = MetricType::Value;
        self
    }

    fn unnamed(mut self) -> Self {
        self.name = None;
        self
    }
}

fn limits(min: u32, max: u32) -> ReplicaLimits {
    ReplicaLimits {
        min_replica_count: min,
        max_replica_count: max,
        idle_replica_count: None,
    }
}

fn idle(idle: u32, min: u32, max: u32) -> ReplicaLimits {
    ReplicaLimits {
        idle_replica_count: Some(idle),
        ..limits(min, max)
    }
}

fn modifiers(formula: &str, target: f64, activation_target: f64) -> ScalingModifiers {
    ScalingModifiers {
        formula: Formula::parse(formula).unwrap(),
        target,
        activation_target,
        metric_type: MetricType::AverageValue,
    }
}

/// The rule without its numbers, for tables.
#[derive(Debug, Clone, Copy, PartialEq)]
enum R {
    Idle,
    Zero,
    Hpa(Clamp),
}

fn rule_kind(rule: Rule) -> R {
    match rule {
        Rule::Idle => R::Idle,
        Rule::ScaleToZero => R::Zero,
        Rule::Hpa { clamp, .. } => R::Hpa(clamp),
    }
}

struct Case {
    what: &'static str,
    readings: Vec<TriggerReading>,
    modifiers: Option<ScalingModifiers>,
    limits: ReplicaLimits,
    current: Option<u32>,
    replicas: u32,
    rule: R,
}

fn case(what: &'static str, readings: Vec<TriggerReading>, limits: ReplicaLimits) -> Case {
    Case {
        what,
        readings,
        modifiers: None,
        limits,
        current: None,
        replicas: 0,
        rule: R::Zero,
    }
}

impl Case {
    fn current(mut self, n: u32) -> Self {
        self.current = Some(n);
        self
    }

    fn modifiers(mut self, m: ScalingModifiers) -> Self {
        self.modifiers = Some(m);
        self
    }

    fn expect(mut self, replicas: u32, rule: R) -> Self {
        self.replicas = replicas;
        self.rule = rule;
        self
    }
}

fn run(c: &Case) -> Result<Decision, ReplicaError> {
    desired_replicas(&c.readings, c.modifiers.as_ref(), c.limits, c.current)
}

#[test]
fn replicas_follow_keda_and_the_hpa() {
    use Clamp::*;
    #[rustfmt::skip]
    let cases = vec![
        // Per metric: AverageValue shares the value among replicas.
        case("README: 25 items, 10 per replica", vec![reading("q", 25.0, 10.0)], limits(0, 20))
            .expect(3, R::Hpa(Within)),
        case("a fractional target", vec![reading("q", 3.0, 0.5)], limits(0, 20))
            .expect(6, R::Hpa(Within)),
        case("the highest metric wins", vec![reading("a", 25.0, 10.0), reading("b", 70.0, 10.0)], limits(0, 20))
            .expect(7, R::Hpa(Within)),
        case("KEDA docs, AverageValue: 20 / 5 = 4 whatever the current replicas", vec![reading("q", 20.0, 5.0)], limits(0, 20))
            .current(3).expect(4, R::Hpa(Within)),
        // Per metric: Value scales the current replicas by value / target.
        case("KEDA docs, Value: 3 × 20 / 5 = 12", vec![reading("q", 20.0, 5.0).value_type()], limits(0, 20))
            .current(3).expect(12, R::Hpa(Within)),
        case("Value without current replicas uses 1", vec![reading("q", 20.0, 5.0).value_type()], limits(0, 20))
            .expect(4, R::Hpa(Within)),
        // Activity and zero.
        case("nothing to do and min 0: zero", vec![reading("q", 0.0, 10.0)], limits(0, 20))
            .expect(0, R::Zero),
        case("below the activation target: zero, though the HPA would ask for 1", vec![reading("q", 3.0, 10.0).activation(5.0)], limits(0, 20))
            .expect(0, R::Zero),
        case("one active trigger activates the object", vec![reading("a", 0.0, 10.0), reading("b", 5.0, 10.0)], limits(0, 20))
            .expect(1, R::Hpa(Within)),
        case("not active but min 2: the HPA stays in charge", vec![reading("q", 3.0, 10.0).activation(5.0)], limits(2, 20))
            .expect(2, R::Hpa(RaisedToMin)),
        case("not active with idleReplicaCount: idle", vec![reading("q", 0.0, 10.0)], idle(0, 2, 10))
            .expect(0, R::Idle),
        case("active with idleReplicaCount: the HPA from min", vec![reading("q", 50.0, 10.0)], idle(0, 2, 10))
            .expect(5, R::Hpa(Within)),
        case("active with idleReplicaCount and little work: min", vec![reading("q", 1.0, 10.0)], idle(0, 2, 10))
            .expect(2, R::Hpa(RaisedToMin)),
        // Bounds.
        case("clamped to maxReplicaCount", vec![reading("q", 1000.0, 10.0)], limits(0, 20))
            .expect(20, R::Hpa(LoweredToMax)),
        case("raised to minReplicaCount", vec![reading("q", 5.0, 10.0)], limits(3, 20))
            .expect(3, R::Hpa(RaisedToMin)),
        case("a huge ratio saturates, then is clamped", vec![reading("q", 1e308, 1e-308)], limits(0, 20))
            .expect(20, R::Hpa(LoweredToMax)),
        // The HPA's 10 % tolerance, with current replicas known.
        case("ratio 1.05: keeps 4 instead of 5", vec![reading("q", 42.0, 10.0)], limits(0, 20))
            .current(4).expect(4, R::Hpa(Within)),
        case("ratio 0.905: keeps 20 instead of 19", vec![reading("q", 181.0, 10.0)], limits(0, 30))
            .current(20).expect(20, R::Hpa(Within)),
        case("ratio 1.5: scales to 6", vec![reading("q", 60.0, 10.0)], limits(0, 20))
            .current(4).expect(6, R::Hpa(Within)),
        case("Value ratio 1.05: keeps 3 instead of 4", vec![reading("q", 10.5, 10.0).value_type()], limits(0, 20))
            .current(3).expect(3, R::Hpa(Within)),
        case("current 0: no tolerance", vec![reading("q", 42.0, 10.0)], limits(0, 20))
            .current(0).expect(5, R::Hpa(Within)),
        case("a tolerated metric keeps 4 against another asking for 2", vec![reading("a", 42.0, 10.0), reading("b", 15.0, 10.0)], limits(0, 20))
            .current(4).expect(4, R::Hpa(Within)),
        case("kept current replicas above max are still clamped", vec![reading("q", 250.0, 10.0)], limits(0, 20))
            .current(25).expect(20, R::Hpa(LoweredToMax)),
        // scalingModifiers: one composite metric, which alone decides activity.
        case("composite average", vec![reading("a", 30.0, 1.0), reading("b", 10.0, 1.0)], limits(0, 20))
            .modifiers(modifiers("(a + b) / 2", 5.0, 0.0)).expect(4, R::Hpa(Within)),
        case("active triggers, inactive composite: zero", vec![reading("a", 10.0, 1.0)], limits(0, 20))
            .modifiers(modifiers("a - 10", 5.0, 0.0)).expect(0, R::Zero),
        case("inactive triggers, active composite", vec![reading("a", 3.0, 1.0).activation(100.0), reading("b", 4.0, 1.0).activation(100.0)], limits(0, 20))
            .modifiers(modifiers("a * b", 5.0, 10.0)).expect(3, R::Hpa(Within)),
        case("a negative composite is inactive", vec![reading("a", 1.0, 1.0), reading("b", 9.0, 1.0)], limits(0, 20))
            .modifiers(modifiers("a - b", 5.0, 0.0)).expect(0, R::Zero),
        case("a negative composite with min 1", vec![reading("a", 1.0, 1.0), reading("b", 9.0, 1.0)], limits(1, 20))
            .modifiers(modifiers("a - b", 5.0, 0.0)).expect(1, R::Hpa(RaisedToMin)),
        case("unnamed triggers are not variables and not metrics", vec![reading("a", 10.0, 1.0), reading("x", 1000.0, 1.0).unnamed()], limits(0, 20))
            .modifiers(modifiers("a", 5.0, 0.0)).expect(2, R::Hpa(Within)),
        case("triggers' own metric types do not matter with modifiers", vec![reading("a", 10.0, 1.0).value_type()], limits(0, 20))
            .current(7).modifiers(modifiers("a", 5.0, 0.0)).expect(2, R::Hpa(Within)),
        case("composite Value: 2 × 8 / 4 = 4", vec![reading("a", 8.0, 1.0), reading("b", 2.0, 1.0)], limits(0, 20))
            .current(2).modifiers(ScalingModifiers { metric_type: MetricType::Value, ..modifiers("max(a, b)", 4.0, 0.0) }).expect(4, R::Hpa(Within)),
    ];
    for c in &cases {
        let decision = run(c).unwrap_or_else(|e| panic!("{}: {e}", c.what));
        assert_eq!(
            (decision.replicas, rule_kind(decision.rule)),
            (c.replicas, c.rule),
            "{}:\n{decision}",
            c.what
        );
    }
}

#[test]
fn each_step_is_recorded() {
    let readings = [
        reading("a", 42.0, 10.0),
        reading("b", 0.0, 10.0).activation(1.0),
    ];
    let d = desired_replicas(&readings, None, limits(1, 20), Some(4)).unwrap();
    assert!(d.active);
    assert_eq!(
        d.triggers.iter().map(|t| t.active).collect::<Vec<_>>(),
        [true, false]
    );
    let a = &d.metrics[0];
    assert_eq!(a.computed, 5);
    assert_eq!(a.usage_ratio, Some(42.0 / 40.0));
    assert!(a.within_tolerance);
    assert_eq!(a.proposal, 4);
    let b = &d.metrics[1];
    assert_eq!((b.computed, b.within_tolerance, b.proposal), (0, false, 0));
    assert_eq!(
        d.rule,
        Rule::Hpa {
            highest: 4,
            lower: 1,
            upper: 20,
            clamp: Clamp::Within
        }
    );
    assert_eq!(d.composite, None);
}

#[test]
fn the_explanation_reads_step_by_step() {
    let readings = [
        reading("mail", 120.0, 50.0),
        reading("retry", 0.0, 10.0).activation(0.5),
    ];
    let m = modifiers("max(mail, retry / 2)", 50.0, 0.0);
    let d = desired_replicas(&readings, Some(&m), limits(0, 20), Some(2)).unwrap();
    assert_eq!(
        d.to_string(),
        "trigger mail: 120 > activationTarget 0: active\n\
         trigger retry: 0 <= activationTarget 0.5: not active\n\
         scalingModifiers: max(mail, retry / 2) = 120 > activationTarget 0: active\n\
         metric composite-metric (AverageValue): ceil(120 / 50) = 3; usage ratio 1.2 is \
         outside the HPA's 10 % tolerance\n\
         HPA: highest proposal 3, within [1, 20]: 3 replicas"
    );

    let d = desired_replicas(&[reading("q", 0.0, 10.0)], None, limits(0, 5), None).unwrap();
    assert_eq!(
        d.to_string(),
        "trigger q: 0 <= activationTarget 0: not active\n\
         not active and minReplicaCount 0: KEDA scales to 0 replicas (after cooldownPeriod)"
    );

    let d = desired_replicas(&[reading("q", 0.0, 10.0)], None, idle(0, 1, 5), None).unwrap();
    assert!(
        d.to_string()
            .ends_with("KEDA scales to idleReplicaCount: 0 replicas")
    );

    let value = reading("q", 21.0, 10.0).value_type();
    let d = desired_replicas(&[value], None, limits(2, 5), Some(3)).unwrap();
    assert_eq!(
        d.to_string(),
        "trigger q: 21 > activationTarget 0: active\n\
         metric q (Value): ceil(3 × 21 / 10) = 7; usage ratio 2.1 is outside the HPA's 10 % \
         tolerance\n\
         HPA: highest proposal 7, lowered to maxReplicaCount of [2, 5]: 5 replicas"
    );

    let d = desired_replicas(
        &[reading("q", 1.0, 3.0).activation(2.0)],
        None,
        limits(2, 5),
        Some(2),
    )
    .unwrap();
    assert!(
        d.to_string().ends_with(
            "usage ratio 0.167 is outside the HPA's 10 % tolerance\nHPA: highest proposal 1, \
             raised to the lower bound of [2, 5]: 2 replicas (not active, but minReplicaCount \
             > 0 keeps the HPA in charge)"
        ),
        "{d}"
    );
}

/// What, readings, modifiers, limits, the expected error message.
type ErrorCase = (
    &'static str,
    Vec<TriggerReading>,
    Option<ScalingModifiers>,
    ReplicaLimits,
    &'static str,
);

#[test]
fn bad_inputs_are_errors_not_panics_or_bogus_counts() {
    let ok = || vec![reading("q", 1.0, 10.0)];
    #[rustfmt::skip]
    let cases: Vec<ErrorCase> = vec![
        ("NaN value", vec![reading("q", f64::NAN, 10.0)], None, limits(0, 5), "q: the value is NaN, not a finite number"),
        ("infinite value", vec![reading("q", f64::INFINITY, 10.0)], None, limits(0, 5), "q: the value is inf"),
        ("infinite target", vec![reading("q", 1.0, f64::INFINITY)], None, limits(0, 5), "q: the target is inf"),
        ("NaN activation", vec![reading("q", 1.0, 1.0).activation(f64::NAN)], None, limits(0, 5), "q: the activationTarget is NaN"),
        ("zero target", vec![reading("q", 1.0, 0.0)], None, limits(0, 5), "q: the target must be > 0, got 0"),
        ("negative target", vec![reading("q", 1.0, -2.0)], None, limits(0, 5), "q: the target must be > 0, got -2"),
        ("Utilization", vec![TriggerReading { metric_type: MetricType::Utilization, ..reading("cpu", 1.0, 1.0) }], None, limits(0, 5), "cpu: metricType Utilization is for cpu and memory triggers"),
        ("no readings", vec![], None, limits(0, 5), "no trigger readings"),
        ("unknown formula variable", ok(), Some(modifiers("a + 1", 1.0, 0.0)), limits(0, 5), "scalingModifiers formula, column 1: unknown variable `a`; the formula can use the trigger names `q`"),
        ("division by zero", vec![reading("a", 1.0, 1.0), reading("b", 0.0, 1.0)], Some(modifiers("a / b", 1.0, 0.0)), limits(0, 5), "column 3: division by zero"),
        ("composite target 0", ok(), Some(modifiers("q", 0.0, 0.0)), limits(0, 5), "composite-metric: the target must be > 0"),
        ("composite target NaN", ok(), Some(modifiers("q", f64::NAN, 0.0)), limits(0, 5), "composite-metric: the target is NaN"),
        ("max 0", ok(), None, limits(0, 0), "replica limits: maxReplicaCount must be at least 1"),
        ("min above max", ok(), None, limits(6, 5), "minReplicaCount 6 is more than maxReplicaCount 5"),
        ("idle not below min", ok(), None, idle(1, 1, 5), "idleReplicaCount 1 must be less than minReplicaCount 1"),
    ];
    for (what, readings, modifiers, limits, message) in &cases {
        match desired_replicas(readings, modifiers.as_ref(), *limits, Some(1)) {
            Ok(d) => panic!("{what}: expected an error, got\n{d}"),
            Err(e) => assert!(e.to_string().contains(message), "{what}: {e}"),
        }
    }
}

#[test]
fn extreme_finite_inputs_give_a_count_within_bounds() {
    let extremes = [
        0.0,
        -0.0,
        1e-308,
        5e-324,
        1.0,
        1e15,
        1e308,
        -1e308,
        f64::MAX,
        f64::MIN,
    ];
    let targets = [5e-324, 1e-308, 0.001, 1.0, 1e308, f64::MAX];
    let currents = [None, Some(0), Some(1), Some(u32::MAX)];
    for &value in &extremes {
        for &target in &targets {
            for &current in &currents {
                for metric_type in [MetricType::AverageValue, MetricType::Value] {
                    let r = TriggerReading {
                        metric_type,
                        ..reading("q", value, target)
                    };
                    let d = desired_replicas(&[r], None, limits(0, 7), current).unwrap();
                    assert!(d.replicas <= 7, "{value} / {target}, {current:?}: {d}");
                    let _ = d.to_string();
                }
            }
        }
    }
}
