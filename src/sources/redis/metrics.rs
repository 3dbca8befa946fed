//! The metrics Redis sources serve: each one's metadata keys and the one function that parses
//! them, declared once in [`METRICS`].

use crate::{
    Error, Result,
    metadata::{Metadata, MetricDef},
};

use super::{
    in_progress::InProgress,
    latency::WaitingQueue,
    libraries::CELERY_SEPARATOR,
    query::{QueueLibrary, RedisQuery, ScoreUnit, StreamMode},
};

/// kombu's default priority steps (`priority_steps` transport option).
const CELERY_PRIORITY_STEPS: &[u8] = &[0, 3, 6, 9];

/// Every metric of a Redis source.
pub const METRICS: &[MetricDef<RedisQuery>] = &[
    MetricDef {
        name: "redis-list",
        keys: &["keys", "measure"],
        parse: list,
    },
    MetricDef {
        name: "redis-zset",
        keys: &["keys", "scoreMax", "scoreUnit"],
        parse: zset,
    },
    MetricDef {
        name: "redis-stream",
        keys: &["stream", "group", "mode", "measure"],
        parse: stream,
    },
    MetricDef {
        name: "bullmq",
        keys: &[
            "queue",
            "prefix",
            "includeActive",
            "countWhenPaused",
            "measure",
        ],
        parse: bullmq,
    },
    MetricDef {
        name: "celery",
        keys: &[
            "queue",
            "prioritySteps",
            "separator",
            "keyPrefix",
            "includeActive",
            "measure",
        ],
        parse: celery,
    },
    MetricDef {
        name: "sidekiq",
        keys: &["queue", "namespace", "includeActive", "measure"],
        parse: sidekiq,
    },
    MetricDef {
        name: "rq",
        keys: &["queue", "includeActive", "measure"],
        parse: rq,
    },
];

/// What a queue trigger measures (`measure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// The work waiting, counted as the library counts it.
    Backlog,
    /// Seconds since the oldest waiting job was enqueued.
    Latency,
}

const MEASURES: &[(&str, Measure)] =
    &[("backlog", Measure::Backlog), ("latency", Measure::Latency)];

fn measure(md: &Metadata<'_>) -> Result<Measure> {
    md.choice("measure", MEASURES, Some(Measure::Backlog))
}

/// For the queues whose items carry no enqueue time: only `backlog`, and `latency` is told
/// why not.
fn backlog_only(md: &Metadata<'_>, why: &str) -> Result<()> {
    match md.optional("measure") {
        Some("latency") => Err(Error::invalid(
            "measure",
            format!("`latency` is not available here: {why}"),
        )),
        _ => md.choice("measure", &[("backlog", ())], Some(())),
    }
}

/// The way out for the queues of [`backlog_only`].
const LATENCY_ALTERNATIVES: &str = "waiting time can be measured where producers record the \
     enqueue time: on a stream (`redis-stream` with a `group`, whose entry ids carry the \
     time) or with a queue library that stamps its jobs (`sidekiq`, `rq`, `bullmq`)";

fn list(md: &Metadata<'_>, _: &()) -> Result<RedisQuery> {
    let keys = md.required_list("keys", "comma-separated Redis list keys, summed")?;
    backlog_only(
        md,
        &format!("plain list items carry no enqueue time; {LATENCY_ALTERNATIVES}"),
    )?;
    Ok(RedisQuery::List { keys: keys.into() })
}

const SCORE_UNITS: &[(&str, ScoreUnit)] = &[("seconds", ScoreUnit::Seconds), ("ms", ScoreUnit::Ms)];

fn zset(md: &Metadata<'_>, _: &()) -> Result<RedisQuery> {
    let keys = md.required_list("keys", "comma-separated Redis sorted-set keys, summed")?;
    let due_only = match md.optional("scoreMax") {
        None if md.optional("scoreUnit").is_some() => {
            return Err(Error::invalid(
                "scoreUnit",
                "is only used with `scoreMax: now`",
            ));
        }
        None => None,
        Some("now") => Some(md.choice("scoreUnit", SCORE_UNITS, Some(ScoreUnit::Seconds))?),
        Some(other) => {
            return Err(Error::invalid(
                "scoreMax",
                format!(
                    "must be `now` (count entries with score <= now), got `{}`",
                    crate::metadata::shorten(other)
                ),
            ));
        }
    };
    Ok(RedisQuery::Zset {
        keys: keys.into(),
        due_only,
    })
}

const STREAM_MODES: &[(&str, StreamMode)] = &[
    ("length", StreamMode::Length),
    ("pending", StreamMode::Pending),
    ("lag", StreamMode::Lag),
    ("backlog", StreamMode::Backlog),
];

fn stream(md: &Metadata<'_>, _: &()) -> Result<RedisQuery> {
    let stream = md.required("stream", "the stream key")?.to_string();
    let group = md.optional("group").map(str::to_string);
    if measure(md)? == Measure::Latency {
        let group = group.ok_or_else(|| {
            Error::invalid(
                "group",
                "is required with `measure: latency`: the consumer group whose oldest \
                 unfinished entry is measured",
            )
        })?;
        if md.optional("mode").is_some() {
            return Err(Error::invalid(
                "mode",
                "chooses what `measure: backlog` counts; leave it out with `measure: latency`",
            ));
        }
        return Ok(RedisQuery::Latency {
            queue: Box::new(WaitingQueue::Stream { stream, group }),
        });
    }
    // Without a group only the length can be read; with one, the backlog is the default.
    let default = if group.is_some() {
        StreamMode::Backlog
    } else {
        StreamMode::Length
    };
    let mode = md.choice("mode", STREAM_MODES, Some(default))?;
    if group.is_none() && mode != StreamMode::Length {
        return Err(Error::invalid(
            "group",
            format!(
                "is required with `mode: {}`: the consumer group name",
                md.optional("mode").unwrap_or_default()
            ),
        ));
    }
    Ok(RedisQuery::Stream {
        stream: stream.into(),
        group: group.map(String::into_boxed_str),
        mode,
    })
}

/// `includeActive` (`true` or `false`), refused beside `measure: latency`.
fn include_active(md: &Metadata<'_>) -> Result<bool> {
    let include = md.flag("includeActive", false)?;
    if include && md.optional("measure") == Some("latency") {
        return Err(include_active_with_latency());
    }
    Ok(include)
}

fn include_active_with_latency() -> Error {
    Error::invalid(
        "includeActive",
        "counts jobs being processed, which wait for nothing: it does not apply to \
         `measure: latency`",
    )
}

fn bullmq(md: &Metadata<'_>, _: &()) -> Result<RedisQuery> {
    let queue = md.required("queue", "the BullMQ queue name")?;
    let prefix = md.optional("prefix").unwrap_or("bull");
    let queue_key = format!("{prefix}:{queue}");
    let include_active = md.flag("includeActive", false)?;
    let count_when_paused = md.flag("countWhenPaused", false)?;
    match measure(md)? {
        Measure::Backlog => Ok(RedisQuery::Bullmq {
            queue_key: queue_key.into(),
            include_active,
            count_when_paused,
        }),
        Measure::Latency if include_active => Err(include_active_with_latency()),
        Measure::Latency => Ok(RedisQuery::Latency {
            queue: Box::new(WaitingQueue::Bullmq {
                queue_key,
                count_when_paused,
            }),
        }),
    }
}

fn celery(md: &Metadata<'_>, _: &()) -> Result<RedisQuery> {
    let queue = md.required("queue", "the Celery queue name")?;
    let steps = match md.list("prioritySteps")? {
        None => CELERY_PRIORITY_STEPS.to_vec(),
        Some(items) => items
            .iter()
            .map(|item| item.parse::<u8>().ok().filter(|step| *step <= 9))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                Error::invalid(
                    "prioritySteps",
                    "must be a comma-separated list of priorities 0-9, e.g. `0,3,6,9`",
                )
            })?,
    };
    let separator = match md.optional("separator") {
        None => CELERY_SEPARATOR.to_string(),
        Some(raw) => unescape_hex(raw).ok_or_else(|| {
            Error::invalid(
                "separator",
                "must be text where `\\xHH` stands for a byte, e.g. `\\x06\\x16`",
            )
        })?,
    };
    let prefix = md.optional("keyPrefix").unwrap_or("");
    let in_progress = include_active(md)?.then(|| InProgress::Celery {
        prefix: prefix.to_string(),
        queue: queue.to_string(),
        separator: separator.clone(),
    });
    backlog_only(
        md,
        &format!(
            "kombu's Redis transport stores messages without an enqueue time; \
             {LATENCY_ALTERNATIVES}"
        ),
    )?;
    Ok(RedisQuery::Celery {
        keys: celery_keys(prefix, queue, &separator, &steps).into(),
        in_progress: in_progress.map(Box::new),
    })
}

fn sidekiq(md: &Metadata<'_>, _: &()) -> Result<RedisQuery> {
    let queue = md.required("queue", "the Sidekiq queue name")?;
    // redis-namespace prefixes every key; the members of `processes` stay bare.
    let prefix = md
        .optional("namespace")
        .map_or_else(String::new, |namespace| format!("{namespace}:"));
    let key = format!("{prefix}queue:{queue}");
    let in_progress = include_active(md)?.then(|| InProgress::Sidekiq {
        prefix,
        queue: queue.to_string(),
    });
    Ok(match measure(md)? {
        Measure::Backlog => RedisQuery::QueueList {
            library: QueueLibrary::Sidekiq,
            key: key.into(),
            in_progress: in_progress.map(Box::new),
        },
        Measure::Latency => RedisQuery::Latency {
            queue: Box::new(WaitingQueue::Sidekiq { key }),
        },
    })
}

fn rq(md: &Metadata<'_>, _: &()) -> Result<RedisQuery> {
    let queue = md.required("queue", "the RQ queue name")?;
    let key = format!("rq:queue:{queue}");
    let in_progress = include_active(md)?.then(|| InProgress::Rq {
        key: format!("rq:wip:{queue}"),
    });
    Ok(match measure(md)? {
        Measure::Backlog => RedisQuery::QueueList {
            library: QueueLibrary::Rq,
            key: key.into(),
            in_progress: in_progress.map(Box::new),
        },
        Measure::Latency => RedisQuery::Latency {
            queue: Box::new(WaitingQueue::Rq { key }),
        },
    })
}

/// The keys kombu's `_size` counts: the queue itself for step 0, `queue + sep + step` for
/// every other step, each behind kombu's `global_keyprefix`.
fn celery_keys(prefix: &str, queue: &str, separator: &str, steps: &[u8]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::with_capacity(steps.len());
    for step in steps {
        let key = if *step == 0 {
            format!("{prefix}{queue}")
        } else {
            format!("{prefix}{queue}{separator}{step}")
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Turns `\xHH` escapes into the characters they name (KEDA metadata is plain text, so the
/// control bytes of kombu's separator are written as escapes).
fn unescape_hex(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find("\\x") {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 2..at + 4)?;
        let byte = u8::from_str_radix(hex, 16).ok().filter(u8::is_ascii)?;
        out.push(char::from(byte));
        rest = &rest[at + 4..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape() {
        assert_eq!(unescape_hex("\\x06\\x16").as_deref(), Some("\x06\x16"));
        assert_eq!(unescape_hex("a\\x3ab").as_deref(), Some("a:b"));
        assert_eq!(unescape_hex("\\x0"), None);
        assert_eq!(unescape_hex("\\xff"), None);
    }
}
