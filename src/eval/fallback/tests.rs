//! KEDA's fallback, held against KEDA's own cases (file and line of kedacore/keda as read).

use super::*;
use crate::eval::{
    formula::Formula,
    replicas::{Decision, desired_replicas_with_fallback},
    scaledobject::ReplicaLimits,
};

fn limits(min: u32, max: u32) -> ReplicaLimits {
    ReplicaLimits {
        min_replica_count: min,
        max_replica_count: max,
        idle_replica_count: None,
    }
}

fn fallback(behavior: FallbackBehavior, replicas: u32) -> Fallback {
    Fallback {
        failure_threshold: 3,
        replicas,
        behavior,
    }
}

fn read(name: &str, value: f64, target: f64) -> TriggerReading {
    TriggerReading {
        label: name.to_owned(),
        name: Some(name.to_owned()),
        value,
        target,
        activation_target: 0.0,
        metric_type: MetricType::AverageValue,
    }
}

fn failed(name: &str, target: f64, metric_type: MetricType) -> FailedTrigger {
    FailedTrigger {
        label: name.to_owned(),
        name: Some(name.to_owned()),
        target,
        metric_type,
    }
}

fn modifiers(formula: &str, target: f64, metric_type: MetricType) -> ScalingModifiers {
    ScalingModifiers {
        formula: Formula::parse(formula).unwrap(),
        target,
        activation_target: 0.0,
        metric_type,
    }
}

/// The metric value KEDA hands the HPA for the first metric, and the replicas.
fn outcome(d: &Decision) -> (f64, u32) {
    (d.metrics[0].value, d.replicas)
}

#[test]
fn static_and_current_replicas_behaviors_as_kedas_fallback_tests() {
    use FallbackBehavior::*;
    let down = [failed("q", 10.0, MetricType::AverageValue)];
    #[rustfmt::skip]
    let cases: &[(FallbackBehavior, Option<u32>, f64, u32, &str)] = &[
        // pkg/fallback/fallback_test.go:213: target 10, replicas 10 → 100.
        (Static, None, 100.0, 10, "pkg/fallback/fallback_test.go:213"),
        (CurrentReplicasIfHigher, Some(4), 100.0, 10, "pkg/fallback/fallback_test.go:381"),
        (CurrentReplicas, Some(6), 60.0, 6, "pkg/fallback/fallback_test.go:415"),
        (Static, Some(15), 100.0, 10, "pkg/fallback/fallback_test.go:449"),
        (CurrentReplicasIfHigher, Some(12), 120.0, 12, "currentReplicasIfHigher, current higher"),
        (CurrentReplicasIfLower, Some(4), 40.0, 4, "currentReplicasIfLower, current lower"),
        (CurrentReplicasIfLower, Some(12), 100.0, 10, "currentReplicasIfLower, current higher"),
    ];
    for (behavior, current, value, replicas, at) in cases {
        let fb = fallback(*behavior, 10);
        let d =
            desired_replicas_with_fallback(&[], &down, None, limits(1, 50), *current, Some(&fb))
                .unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(outcome(&d), (*value, *replicas), "{at}");
        let step = d.fallback.as_ref().unwrap();
        assert_eq!(
            (step.behavior, step.failed.as_slice()),
            (*behavior, &["q".to_owned()][..]),
            "{at}"
        );
    }
}

#[test]
fn value_metrics_are_divided_by_the_ready_replicas() {
    let fb = fallback(FallbackBehavior::Static, 4);
    let down = [failed("q", 2.0, MetricType::Value)];
    // 2 × 4 / 3 = 2.666 (a truncated milli-quantity); the HPA: ceil(3 × 2.666 / 2) = 4.
    let d = desired_replicas_with_fallback(&[], &down, None, limits(1, 20), Some(3), Some(&fb))
        .unwrap();
    assert_eq!(outcome(&d), (2.666, 4));
    // KEDA gives up with no ready replica.
    for current in [None, Some(0)] {
        let e = desired_replicas_with_fallback(&[], &down, None, limits(1, 20), current, Some(&fb))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("divides the fallback replicas by the ready replicas"),
            "{e}"
        );
    }
    // The composite metric with metricType Value, likewise.
    let m = modifiers("q", 2.0, MetricType::Value);
    let d = desired_replicas_with_fallback(&[], &down, Some(&m), limits(1, 20), Some(2), Some(&fb))
        .unwrap();
    assert_eq!(outcome(&d), (4.0, 4));
}

#[test]
fn healthy_triggers_keep_their_metrics_beside_a_fallback() {
    let fb = fallback(FallbackBehavior::Static, 3);
    let healthy = [read("big", 100.0, 10.0)];
    let down = [failed("q", 10.0, MetricType::AverageValue)];
    let d = desired_replicas_with_fallback(&healthy, &down, None, limits(0, 50), None, Some(&fb))
        .unwrap();
    assert_eq!(
        d.metrics.iter().map(|m| m.proposal).collect::<Vec<_>>(),
        [10, 3]
    );
    assert_eq!(d.replicas, 10);
    // With scalingModifiers and a behavior other than scalingModifiers, the composite as a
    // whole is the fallback (HandleScalingModifiers with fallbackActive).
    let m = modifiers("big + q", 5.0, MetricType::AverageValue);
    let d =
        desired_replicas_with_fallback(&healthy, &down, Some(&m), limits(0, 50), None, Some(&fb))
            .unwrap();
    assert_eq!(outcome(&d), (15.0, 3));
}

#[test]
fn scaling_modifiers_behavior_as_kedas_e2e_and_unit_tests() {
    // tests/internals/fallback/fallback_scaling_modifiers_test.go:94-120: fallback
    // {failureThreshold 3, replicas 4, behavior scalingModifiers}, formula
    // "primary ?? secondary ?? 8", target 2, min 1, max 20, primary 16, secondary 12.
    let fb = fallback(FallbackBehavior::ScalingModifiers, 4);
    let m = modifiers("primary ?? secondary ?? 8", 2.0, MetricType::AverageValue);
    let run = |ok: &[TriggerReading], down: &[FailedTrigger]| {
        desired_replicas_with_fallback(ok, down, Some(&m), limits(1, 20), None, Some(&fb)).unwrap()
    };
    let (p, s) = (read("primary", 16.0, 1.0), read("secondary", 12.0, 1.0));
    let (p_down, s_down) = (
        failed("primary", 1.0, MetricType::AverageValue),
        failed("secondary", 1.0, MetricType::AverageValue),
    );
    // :166 both healthy: 16 / 2 = 8.
    assert_eq!(run(&[p.clone(), s.clone()], &[]).replicas, 8);
    // :181 primary fails: 12 / 2 = 6.
    let d = run(&[s], std::slice::from_ref(&p_down));
    assert_eq!(d.replicas, 6);
    assert_eq!(
        d.fallback.unwrap().rule,
        "nil in the formula, which gives a value"
    );
    // :194 both fail: the trailing 8 / 2 = 4, fallback.replicas not consulted.
    assert_eq!(run(&[], &[p_down, s_down]).replicas, 4);

    // pkg/scaling/modifiers/formula_test.go:288-331: "trigger1 ?? trigger2", both nil,
    // replicas 7, target 2: composite 14, 7 replicas.
    let fb = fallback(FallbackBehavior::ScalingModifiers, 7);
    let m = modifiers("trigger1 ?? trigger2", 2.0, MetricType::AverageValue);
    let down = [
        failed("trigger1", 1.0, MetricType::AverageValue),
        failed("trigger2", 1.0, MetricType::AverageValue),
    ];
    let d = desired_replicas_with_fallback(&[], &down, Some(&m), limits(1, 20), None, Some(&fb))
        .unwrap();
    assert_eq!(outcome(&d), (14.0, 7));
    assert!(
        d.to_string()
            .contains("the formula gives nil: KEDA uses fallback.replicas × target = 7 × 2"),
        "{d}"
    );

    // A formula that fails on nil gives the HPA no composite metric.
    let m = modifiers("trigger1 + 1 ?? 0", 2.0, MetricType::AverageValue);
    let e = desired_replicas_with_fallback(&[], &down, Some(&m), limits(1, 20), None, Some(&fb))
        .unwrap_err();
    assert!(e.to_string().contains("the formula fails"), "{e}");
    assert!(e.to_string().contains("no composite metric"), "{e}");
}

#[test]
fn without_a_fallback_there_is_no_count() {
    let down = [failed("q", 10.0, MetricType::AverageValue)];
    let e =
        desired_replicas_with_fallback(&[], &down, None, limits(1, 20), None, None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("q could not be read and the ScaledObject has no `fallback`"),
        "{e}"
    );
    // currentReplicas behaviors need the current replicas.
    let fb = fallback(FallbackBehavior::CurrentReplicas, 3);
    let e = desired_replicas_with_fallback(&[], &down, None, limits(1, 20), None, Some(&fb))
        .unwrap_err();
    assert!(e.to_string().contains("pass --current-replicas"), "{e}");
    // A nil formula with every trigger read: fallback.replicas × target whatever the behavior,
    // an error without a fallback.
    let m = modifiers("q > 5 ? q : nil ?? nil", 2.0, MetricType::AverageValue);
    let ok = [read("q", 1.0, 1.0)];
    let fb = fallback(FallbackBehavior::Static, 3);
    let d =
        desired_replicas_with_fallback(&ok, &[], Some(&m), limits(1, 20), None, Some(&fb)).unwrap();
    assert_eq!(outcome(&d), (6.0, 3));
    let e =
        desired_replicas_with_fallback(&ok, &[], Some(&m), limits(1, 20), None, None).unwrap_err();
    assert_eq!(e, ReplicaError::NilWithoutFallback);
}

/// k8s/examples/guarded-worker.yaml's formula under its fallback.
#[test]
fn the_guarded_worker_example_falls_back_as_its_comments_say() {
    let fb = fallback(FallbackBehavior::ScalingModifiers, 4);
    let m = modifiers(
        "(pg_waiting ?? 0) < 1 ? backlog ?? nil : 0",
        20.0,
        MetricType::AverageValue,
    );
    let run = |ok: &[TriggerReading], down: &[FailedTrigger]| {
        desired_replicas_with_fallback(ok, down, Some(&m), limits(1, 30), None, Some(&fb)).unwrap()
    };
    let backlog = read("backlog", 100.0, 20.0);
    let pg_down = failed("pg_waiting", 1.0, MetricType::AverageValue);
    // PgBouncer unreadable: no one waiting, 100 / 20.
    assert_eq!(run(std::slice::from_ref(&backlog), &[pg_down]).replicas, 5);
    // Backlog unreadable: nil, so fallback.replicas.
    let waiting = read("pg_waiting", 0.0, 1.0);
    let backlog_down = failed("backlog", 20.0, MetricType::AverageValue);
    let d = run(&[waiting], &[backlog_down]);
    assert_eq!(outcome(&d), (80.0, 4));
}
