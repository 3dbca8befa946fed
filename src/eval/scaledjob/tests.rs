//! KEDA's ScaledJob cases (kedacore/keda pkg/scaling/executor/scale_jobs_test.go, line as read).

use super::*;
use crate::eval::parse_scaled_objects;

#[test]
fn strategies_give_kedas_effective_max_scale() {
    use ScalingStrategy::*;
    let custom = |deduction, percentage| Custom {
        deduction,
        percentage,
    };
    // (strategy, maxScale, running, pending, maxReplicaCount, expected maximum, line)
    #[rustfmt::skip]
    let cases: &[(ScalingStrategy, i64, i64, i64, i64, i64, u32)] = &[
        (Default, 3, 2, 0, 5, 1, 93),
        (Default, 2, 0, 0, 5, 2, 94),
        (custom(1, 0.5), 3, 2, 0, 5, 1, 104),
        (custom(1, 0.5), 10, 0, 0, 10, 9, 105),
        (custom(2, 0.0), 3, 2, 0, 5, 1, 122),
        (custom(-2, 0.0), 3, 2, 0, 4, 4, 128),
        (custom(0, 0.5), 10, 2, 0, 100, 9, 143),
        (custom(0, 0.5), 10, 0, 0, 100, 10, 145),
        (Accurate, 3, 2, 0, 5, 3, 162),
        (Accurate, 5, 2, 0, 5, 3, 163),
        (Accurate, 3, 4, 2, 10, 1, 166),
        (Accurate, 5, 4, 2, 5, 1, 167),
        (Accurate, 3, 3, 3, 5, 0, 170),
        (Accurate, 15, 15, 15, 20, 0, 173),
        (Accurate, 10, 10, 10, 15, 0, 176),
        (Accurate, 20, 15, 10, 20, 5, 179),
        (Eager, 4, 3, 0, 10, 4, 187),
        (Eager, 4, 0, 3, 10, 4, 190),
        (Eager, 4, 7, 0, 10, 3, 194),
        (Eager, 4, 1, 6, 10, 3, 197),
        (Eager, 15, 0, 0, 10, 10, 201),
    ];
    for &(strategy, max_scale, running, pending, max, expected, line) in cases {
        let (got, scale_to) = strategy.effective_max_scale(max_scale, running, pending, max, 1);
        assert_eq!(got, expected, "scale_jobs_test.go:{line}");
        let expected_scale_to = if strategy == Eager { max } else { 1 };
        assert_eq!(scale_to, expected_scale_to, "scale_jobs_test.go:{line}");
    }
}

fn job(yaml_spec: &str) -> ScaledJob {
    let yaml = format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {{name: j, namespace: ns}}\n\
         spec:\n{yaml_spec}  triggers:\n    - type: external\n      name: q\n      metadata: \
         {{source: redis-main, metric: redis-list, keys: q, target: \"1\"}}\n"
    );
    let mut file = parse_scaled_objects(&yaml).unwrap();
    file.scaled_jobs.remove(0)
}

fn reading(value: f64, target: f64) -> JobReading {
    JobReading {
        label: "q".into(),
        value,
        target,
        metric_type: MetricType::AverageValue,
        active: value > 0.0,
    }
}

#[test]
fn min_replica_count_comes_first_as_in_kedas_get_scaling_decision() {
    let two = job("  minReplicaCount: 2\n");
    // scale_jobs_test.go:243: 0 running, min 2: 2 Jobs, even with an empty queue.
    assert_eq!(jobs_to_create(&two, &[reading(0.0, 1.0)], 0, 0).jobs, 2);
    // :257: 1 running: 1.
    assert_eq!(jobs_to_create(&two, &[reading(0.0, 1.0)], 1, 0).jobs, 1);
    // :271: min 1, 1 running, queue 2: the strategy with 0 counted running: 2.
    let one = job("  minReplicaCount: 1\n");
    let d = jobs_to_create(&one, &[reading(2.0, 1.0)], 1, 0);
    assert_eq!((d.effective_max_scale, d.scale_to, d.jobs), (2, 2, 2));
}

#[test]
fn one_polling_interval_per_strategy() {
    // Queue 30, target 5: maxScale 6; 4 running, 1 pending, maxReplicaCount 8.
    let r = [reading(30.0, 5.0)];
    #[rustfmt::skip]
    let cases: &[(&str, i64)] = &[
        ("", 2),                         // 6 - 4
        ("    strategy: custom\n    customScalingQueueLengthDeduction: 1\n    customScalingRunningJobPercentage: \"0.5\"\n", 3), // 6 - 1 - 2
        ("    strategy: custom\n    customScalingRunningJobPercentage: \"\"\n", 2), // default
        ("    strategy: accurate\n", 4),  // 6 + 4 - 1 > 8: 8 - 4
        ("    strategy: eager\n", 3),     // min(8 - 4 - 1, 6)
    ];
    for (strategy, expected) in cases {
        let j = job(&format!(
            "  maxReplicaCount: 8\n  scalingStrategy:\n{strategy}    multipleScalersCalculation: max\n"
        ));
        let d = jobs_to_create(&j, &r, 4, 1);
        assert_eq!(d.jobs, *expected, "{strategy:?}: {d}");
    }
    // Not active: none.
    let j = job("");
    assert_eq!(jobs_to_create(&j, &[reading(0.0, 5.0)], 0, 0).jobs, 0);
    // maxScale is bounded by maxReplicaCount.
    let j = job("  maxReplicaCount: 3\n");
    assert_eq!(jobs_to_create(&j, &[reading(100.0, 1.0)], 0, 0).jobs, 3);
}

#[test]
fn multiple_scalers_calculation_combines_active_triggers() {
    let r = [reading(10.0, 2.0), reading(4.0, 1.0), reading(0.0, 1.0)];
    #[rustfmt::skip]
    let cases: &[(&str, i64, i64)] = &[
        ("max", 10, 5),
        ("min", 4, 4),
        ("avg", 7, 5),   // ceil(4.5)
        ("sum", 14, 9),
    ];
    for (calculation, queue, max_scale) in cases {
        let j = job(&format!(
            "  scalingStrategy:\n    multipleScalersCalculation: {calculation}\n"
        ));
        let d = jobs_to_create(&j, &r, 0, 0);
        assert_eq!(
            (d.queue_length, d.max_scale),
            (*queue, *max_scale),
            "{calculation}"
        );
    }
    let bad = "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: j}\nspec:\n  \
               scalingStrategy: {multipleScalersCalculation: median}\n  triggers: []\n";
    let e = parse_scaled_objects(bad).unwrap_err();
    assert!(e.to_string().contains("(ScaledJob default/j): spec.scalingStrategy.multipleScalersCalculation: expected max, min, avg or sum, got `median`"), "{e}");
}
