//! What the queue libraries write to Redis that more than one kind of read depends on: a
//! leaf, so backlog queries and latency rules can share these facts without using each other.

/// kombu's default separator between a Celery queue name and its priority step.
pub const CELERY_SEPARATOR: &str = "\x06\x16";

/// BullMQ scores delayed jobs as due_ms · 0x1000 + a 12-bit counter (`getDelayedScore`).
pub const BULLMQ_DELAY_FACTOR: i64 = 0x1000;
