//! The Redis Streams queue between ingest and the store workers.
//!
//! One stream entry per edge batch (or per direct CPE request), holding the
//! batch exactly as the wire format encodes it (zstd-compressed postcard), so
//! Redis memory per queued report stays small. Workers read through a consumer
//! group; an entry leaves the stream (XACK + XDEL) only after its rows are
//! committed in PostgreSQL, or after it has failed `max_attempts` times, when it
//! moves to the dead-letter stream together with its error.
//!
//! Redis durability is Redis's own setting (`appendonly`/`appendfsync`): the
//! edge keeps every batch until PostgreSQL has it, so losing Redis costs
//! resends, never data.

use crate::config::RedisConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{AsyncCommands, RedisError, Value};
use std::time::Duration;
use tokio::sync::Mutex;

/// Where a queued entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A batch from an edge, identified by `(edge, seq)`.
    Edge,
    /// A report posted straight to central by a CPE.
    Direct,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Edge => "edge",
            Origin::Direct => "direct",
        }
    }
}

/// A stream entry as read by a worker.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    /// `None` when the entry is not one bulkflow wrote (or was damaged).
    pub content: Option<Content>,
}

#[derive(Debug, Clone)]
pub struct Content {
    pub origin: Origin,
    pub edge: String,
    pub seq: u64,
    pub data: Vec<u8>,
}

pub struct Queue {
    client: redis::Client,
    manager: Mutex<Option<ConnectionManager>>,
    cfg: RedisConfig,
    /// Reads block up to this long; the connection's response timeout is longer.
    block: Duration,
}

impl Queue {
    /// Prepares a queue; the connection is made on first use, so central can
    /// start (and answer 503) while Redis is down.
    pub fn new(cfg: &RedisConfig, block: Duration) -> Result<Queue, RedisError> {
        Ok(Queue {
            client: redis::Client::open(cfg.url.as_str())?,
            manager: Mutex::new(None),
            cfg: cfg.clone(),
            block,
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, RedisError> {
        let mut slot = self.manager.lock().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(self.block + Duration::from_secs(5)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let m = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *slot = Some(m.clone());
        Ok(m)
    }

    /// Appends one entry; returns its stream id.
    pub async fn push(
        &self,
        origin: Origin,
        edge: &str,
        seq: u64,
        data: &[u8],
    ) -> Result<String, RedisError> {
        let mut c = self.conn().await?;
        redis::cmd("XADD")
            .arg(&self.cfg.stream)
            .arg("*")
            .arg("origin")
            .arg(origin.as_str())
            .arg("edge")
            .arg(edge)
            .arg("seq")
            .arg(seq)
            .arg("data")
            .arg(data)
            .query_async(&mut c)
            .await
    }

    /// Creates the consumer group if it does not exist (reading from the start,
    /// so entries queued before the first worker ran are not skipped).
    pub async fn ensure_group(&self) -> Result<(), RedisError> {
        let mut c = self.conn().await?;
        let r: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.cfg.stream)
            .arg(&self.cfg.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Entries delivered to `consumer` and not yet acknowledged (after a
    /// failed write, or a restart under the same name).
    pub async fn read_pending(
        &self,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Item>, RedisError> {
        self.read_group(consumer, count, "0", None).await
    }

    /// New entries, waiting up to the block time for some to arrive.
    pub async fn read_new(&self, consumer: &str, count: usize) -> Result<Vec<Item>, RedisError> {
        self.read_group(consumer, count, ">", Some(self.block))
            .await
    }

    async fn read_group(
        &self,
        consumer: &str,
        count: usize,
        from: &str,
        block: Option<Duration>,
    ) -> Result<Vec<Item>, RedisError> {
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.cfg.group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.cfg.stream).arg(from);
        let reply: Option<StreamReadReply> = cmd.query_async(&mut c).await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(item)
            .collect())
    }

    /// Takes over entries another consumer has held longer than `min_idle`
    /// (a worker that died mid-batch).
    pub async fn reclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Item>, RedisError> {
        let mut c = self.conn().await?;
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.cfg.stream)
            .arg(&self.cfg.group)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut c)
            .await?;
        Ok(reply.claimed.into_iter().map(item).collect())
    }

    /// Acknowledges and deletes entries whose rows are committed.
    pub async fn ack(&self, ids: &[String]) -> Result<(), RedisError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.cfg.stream)
            .arg(&self.cfg.group)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.cfg.stream)
            .arg(ids)
            .ignore()
            .cmd("HDEL")
            .arg(self.attempts_key())
            .arg(ids)
            .ignore()
            .query_async::<()>(&mut c)
            .await
    }

    fn attempts_key(&self) -> String {
        format!("{}:attempts", self.cfg.stream)
    }

    /// Counts one failed attempt at an entry; returns the attempts so far.
    pub async fn record_failure(&self, id: &str) -> Result<u32, RedisError> {
        let mut c = self.conn().await?;
        c.hincr(self.attempts_key(), id, 1).await
    }

    /// Moves an entry to the dead-letter stream with its error, atomically.
    pub async fn dead_letter(&self, item: &Item, error: &str) -> Result<(), RedisError> {
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        let add = pipe
            .cmd("XADD")
            .arg(&self.cfg.dead_letter_stream)
            .arg("*")
            .arg("original_id")
            .arg(&item.id)
            .arg("error")
            .arg(error);
        if let Some(content) = &item.content {
            add.arg("origin")
                .arg(content.origin.as_str())
                .arg("edge")
                .arg(&content.edge)
                .arg("seq")
                .arg(content.seq)
                .arg("data")
                .arg(&content.data);
        }
        add.ignore();
        pipe.cmd("XACK")
            .arg(&self.cfg.stream)
            .arg(&self.cfg.group)
            .arg(&item.id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.cfg.stream)
            .arg(&item.id)
            .ignore()
            .cmd("HDEL")
            .arg(self.attempts_key())
            .arg(&item.id)
            .ignore();
        pipe.query_async::<()>(&mut c).await
    }

    /// Entries in the stream (queued and in progress).
    pub async fn len(&self) -> Result<u64, RedisError> {
        let mut c = self.conn().await?;
        c.xlen(&self.cfg.stream).await
    }

    /// Whether Redis answers at all.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut c = self.conn().await?;
        redis::cmd("PING").query_async::<()>(&mut c).await
    }
}

fn item(s: StreamId) -> Item {
    let field = |k: &str| match s.map.get(k) {
        Some(Value::BulkString(b)) => Some(b.clone()),
        Some(Value::SimpleString(t)) => Some(t.clone().into_bytes()),
        _ => None,
    };
    let text = |k: &str| field(k).and_then(|b| String::from_utf8(b).ok());
    let content = (|| {
        let origin = match text("origin")?.as_str() {
            "edge" => Origin::Edge,
            "direct" => Origin::Direct,
            _ => return None,
        };
        Some(Content {
            origin,
            edge: text("edge")?,
            seq: text("seq")?.parse().ok()?,
            data: field("data")?,
        })
    })();
    Item { id: s.id, content }
}
