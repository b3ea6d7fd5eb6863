//! Policies and alert configurations: defaults, TOML, and rejection of the impossible.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: helpers outside #[test] fns may unwrap, as tests do (clippy.toml).
use embeddings_health::{
    AlertConfig, AlertConfigSpec, AlertMetric, AlertRule, AlertRuleSpec, ConfigError, HealthPolicy,
    HealthPolicySpec, Severity,
};

/// Whether an error is the one a case expects.
type IsExpected = fn(&ConfigError) -> bool;

#[test]
fn defaults_are_valid_and_are_the_spec() {
    let from_spec = HealthPolicySpec::default().build().unwrap();
    assert_eq!(from_spec, HealthPolicy::default());
    assert_eq!(from_spec.liveness_timeout().as_secs(), 30);
    assert_eq!(from_spec.max_snapshot_age().as_secs(), 60);
    let config = AlertConfig::default();
    assert_eq!(config.history_capacity(), 256);
    assert_eq!(config.rules().len(), 11);
    // The hand-built recommended rules pass validation.
    let revalidated = AlertConfig::try_from(AlertConfigSpec::from(config.clone())).unwrap();
    assert_eq!(revalidated, config);
}

#[test]
fn policy_loads_from_toml() {
    let policy = HealthPolicy::from_toml_str(
        r"
        min_models_loaded = 11
        max_gpu_memory_fraction = 0.8
        max_error_rate_per_minute = 5
        max_snapshot_age_seconds = 15.5
        liveness_timeout_seconds = 10
        ",
    )
    .unwrap();
    assert_eq!(policy.min_models_loaded(), 11);
    assert!((policy.max_gpu_memory_fraction() - 0.8).abs() < f64::EPSILON);
    assert_eq!(policy.max_snapshot_age().as_millis(), 15_500);
    assert_eq!(
        HealthPolicy::from_toml_str("").unwrap(),
        HealthPolicy::default()
    );
    // Through plain serde, as a section of a larger configuration.
    #[derive(serde::Deserialize)]
    struct Server {
        health: HealthPolicy,
    }
    let server: Server = toml::from_str("[health]\nmin_models_loaded = 12\n").unwrap();
    assert_eq!(server.health.min_models_loaded(), 12);
    // And back.
    let json = serde_json::to_string(&policy).unwrap();
    assert_eq!(serde_json::from_str::<HealthPolicy>(&json).unwrap(), policy);
}

#[test]
fn impossible_policies_are_rejected_with_typed_errors() {
    let d = HealthPolicySpec::default;
    let cases: Vec<(HealthPolicySpec, IsExpected)> = vec![
        (
            HealthPolicySpec {
                min_models_loaded: 13,
                ..d()
            },
            |e| {
                matches!(
                    e,
                    ConfigError::ModelCountOutOfRange {
                        value: 13,
                        max: 12,
                        ..
                    }
                )
            },
        ),
        (
            HealthPolicySpec {
                min_models_loaded: 0,
                ..d()
            },
            |e| matches!(e, ConfigError::ModelCountOutOfRange { value: 0, .. }),
        ),
        (
            HealthPolicySpec {
                max_gpu_memory_fraction: 1.01,
                ..d()
            },
            |e| {
                matches!(
                    e,
                    ConfigError::InvalidFraction {
                        field: "max_gpu_memory_fraction",
                        ..
                    }
                )
            },
        ),
        (
            HealthPolicySpec {
                max_gpu_memory_fraction: 0.0,
                ..d()
            },
            |e| matches!(e, ConfigError::InvalidFraction { .. }),
        ),
        (
            HealthPolicySpec {
                max_gpu_memory_fraction: f64::NAN,
                ..d()
            },
            |e| matches!(e, ConfigError::InvalidFraction { .. }),
        ),
        (
            HealthPolicySpec {
                max_error_rate_per_minute: f64::NAN,
                ..d()
            },
            |e| {
                matches!(
                    e,
                    ConfigError::InvalidNumber {
                        field: "max_error_rate_per_minute",
                        ..
                    }
                )
            },
        ),
        (
            HealthPolicySpec {
                max_error_rate_per_minute: 0.0,
                ..d()
            },
            |e| matches!(e, ConfigError::InvalidNumber { .. }),
        ),
        (
            HealthPolicySpec {
                max_error_rate_per_minute: f64::INFINITY,
                ..d()
            },
            |e| matches!(e, ConfigError::InvalidNumber { .. }),
        ),
        (
            HealthPolicySpec {
                max_snapshot_age_seconds: -1.0,
                ..d()
            },
            |e| {
                matches!(
                    e,
                    ConfigError::InvalidDuration {
                        field: "max_snapshot_age_seconds",
                        ..
                    }
                )
            },
        ),
        (
            HealthPolicySpec {
                liveness_timeout_seconds: f64::NAN,
                ..d()
            },
            |e| {
                matches!(
                    e,
                    ConfigError::InvalidDuration {
                        field: "liveness_timeout_seconds",
                        ..
                    }
                )
            },
        ),
        (
            HealthPolicySpec {
                liveness_timeout_seconds: 1e300,
                ..d()
            },
            |e| matches!(e, ConfigError::InvalidDuration { .. }),
        ),
    ];
    for (spec, expected) in cases {
        let err = HealthPolicy::try_from(spec).unwrap_err();
        assert!(expected(&err), "{spec:?} gave {err:?}");
        assert!(
            err.to_string().contains("use a"),
            "the message says what to do: {err}"
        );
    }
    let err = HealthPolicySpec {
        min_models_loaded: 13,
        ..d()
    }
    .build()
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "min_models_loaded = 13 is impossible: there are 12 model slots, so use a count between 1 and 12"
    );
}

#[test]
fn loading_validates_too() {
    assert!(matches!(
        HealthPolicy::from_toml_str("min_models_loaded = 13"),
        Err(ConfigError::ModelCountOutOfRange { value: 13, .. })
    ));
    assert!(matches!(
        HealthPolicy::from_toml_str("max_gpu_memory_fraction = 1.5"),
        Err(ConfigError::InvalidFraction { .. })
    ));
    assert!(matches!(
        HealthPolicy::from_toml_str("max_gpu_memory_fraction = nan"),
        Err(ConfigError::InvalidFraction { .. })
    ));
    assert!(matches!(
        HealthPolicy::from_toml_str("liveness_timeout_seconds = -5"),
        Err(ConfigError::InvalidDuration { .. })
    ));
    assert!(matches!(
        HealthPolicy::from_toml_str("min_models = 3"),
        Err(ConfigError::Toml { .. })
    ));
    assert!(matches!(
        HealthPolicy::from_toml_str("min_models_loaded = \"ten\""),
        Err(ConfigError::Toml { .. })
    ));
    assert!(matches!(
        HealthPolicy::from_toml_str("min_models_loaded = -1"),
        Err(ConfigError::Toml { .. })
    ));
    // Plain serde goes through the same validation.
    let err = toml::from_str::<HealthPolicy>("min_models_loaded = 13").unwrap_err();
    assert!(err.to_string().contains("between 1 and 12"), "{err}");
    let err =
        serde_json::from_str::<HealthPolicy>(r#"{"max_gpu_memory_fraction": 2.0}"#).unwrap_err();
    assert!(err.to_string().contains("max_gpu_memory_fraction"), "{err}");
}

#[test]
fn alert_config_loads_from_toml() {
    let config = AlertConfig::from_toml_str(
        r#"
        history_capacity = 10
        [[rules]]
        name = "p95"
        metric = "latency_p95"
        threshold = 50000
        for_seconds = 30
        hysteresis = 5000
        severity = "critical"
        [[rules]]
        name = "hits"
        metric = "cache_hit_rate"
        threshold = 0.4
        "#,
    )
    .unwrap();
    assert_eq!(config.history_capacity(), 10);
    let [p95, hits] = config.rules() else {
        panic!("two rules")
    };
    assert_eq!(p95.severity(), Severity::Critical);
    assert_eq!(p95.for_duration().as_secs(), 30);
    assert_eq!(hits.severity(), Severity::Warning);
    assert_eq!(hits.for_duration().as_secs(), 0);
    assert!((hits.hysteresis()).abs() < f64::EPSILON);
    // No `rules` key: the recommended ones; `rules = []`: none.
    assert_eq!(
        AlertConfig::from_toml_str("").unwrap(),
        AlertConfig::default()
    );
    assert!(
        AlertConfig::from_toml_str("rules = []")
            .unwrap()
            .rules()
            .is_empty()
    );
}

#[test]
fn impossible_alert_rules_are_rejected() {
    let rule = |metric, threshold| AlertRuleSpec::new("r", metric, threshold);
    let cases: Vec<(AlertRuleSpec, IsExpected)> = vec![
        (rule(AlertMetric::CacheHitRate, 1.5), |e| {
            matches!(e, ConfigError::InvalidThreshold { .. })
        }),
        (rule(AlertMetric::GpuMemory, 1.01), |e| {
            matches!(e, ConfigError::InvalidThreshold { .. })
        }),
        (rule(AlertMetric::ErrorRate, -1.0), |e| {
            matches!(e, ConfigError::InvalidThreshold { .. })
        }),
        (rule(AlertMetric::LatencyP95, f64::NAN), |e| {
            matches!(e, ConfigError::InvalidThreshold { .. })
        }),
        (
            AlertRuleSpec {
                for_seconds: -1.0,
                ..rule(AlertMetric::ErrorRate, 5.0)
            },
            |e| {
                matches!(e, ConfigError::InRule { source, .. }
                if matches!(**source, ConfigError::InvalidDuration { field: "for_seconds", .. }))
            },
        ),
        (
            AlertRuleSpec {
                for_seconds: f64::NAN,
                ..rule(AlertMetric::ErrorRate, 5.0)
            },
            |e| matches!(e, ConfigError::InRule { .. }),
        ),
        (
            rule(AlertMetric::ErrorRate, 5.0).with_hysteresis(-0.1),
            |e| matches!(e, ConfigError::InRule { .. }),
        ),
        (
            rule(AlertMetric::ErrorRate, 5.0).with_hysteresis(6.0),
            |e| matches!(e, ConfigError::InRule { .. }),
        ),
        (
            rule(AlertMetric::CacheHitRate, 0.95).with_hysteresis(0.1),
            |e| matches!(e, ConfigError::InRule { .. }),
        ),
        (AlertRuleSpec::new("  ", AlertMetric::ErrorRate, 5.0), |e| {
            matches!(e, ConfigError::EmptyRuleName)
        }),
    ];
    for (spec, expected) in cases {
        let err = AlertRule::try_from(spec.clone()).unwrap_err();
        assert!(expected(&err), "{spec:?} gave {err:?}");
    }
    let ok = rule(AlertMetric::ErrorRate, 5.0).build().unwrap();
    assert!(matches!(
        AlertConfig::new(vec![ok.clone(), ok.clone()], 10),
        Err(ConfigError::DuplicateRuleName { name }) if name == "r"
    ));
    assert!(matches!(
        AlertConfig::new(vec![ok], 0),
        Err(ConfigError::ZeroHistoryCapacity)
    ));
    assert!(matches!(
        AlertConfig::from_toml_str("history_capacity = 0"),
        Err(ConfigError::ZeroHistoryCapacity)
    ));
    assert!(matches!(
        AlertConfig::from_toml_str(
            "[[rules]]\nname = \"x\"\nmetric = \"gpu_memory\"\nthreshold = 2.0\n"
        ),
        Err(ConfigError::InvalidThreshold { .. })
    ));
    assert!(matches!(
        AlertConfig::from_toml_str("[[rules]]\nname = \"x\"\nmetric = \"nope\"\nthreshold = 2.0\n"),
        Err(ConfigError::Toml { .. })
    ));
    let err =
        toml::from_str::<AlertRule>("name = \"x\"\nmetric = \"error_rate\"\nthreshold = -3.0\n")
            .unwrap_err();
    assert!(err.to_string().contains("threshold -3"), "{err}");
}
