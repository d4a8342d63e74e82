//! A lean RESP2 client for the serving path's reads from a single Redis server.
//!
//! The `redis` crate parses every reply into a `redis::Value` tree, one heap-allocated `Vec`
//! per bulk string, through a `combine` parser running in the connection's own task: for a
//! request of 10 views × 5 features × 100 entities (6,000 fields) that was 44 % of the
//! server's instructions (BENCHMARKS.md). Here a pipeline is written as RESP bytes into one
//! buffer, the replies are read into one buffer, and each bulk string is handed out as a
//! slice of it (`Bytes`, no copy).
//!
//! A few connections ("lanes") are shared by all requests. A request queues its pipeline on
//! the lane with the fewest pending; the lane's task writes every pipeline queued since its
//! last batch in one write, reads the replies in order and hands each request its own as
//! soon as they are whole. Under concurrent load Redis thus reads and answers many requests
//! per system call instead of one: with 32 clients of one entity each, that halved its CPU
//! time per request (BENCHMARKS.md). A request that stops waiting does
//! not put the lane out of step: its replies are read and dropped. A connection that fails
//! is dropped and the lane reconnects for its next batch; when one that already served a
//! batch fails on I/O (typically: the server restarted while it sat idle), the pipelines not
//! yet answered are sent once more on a fresh connection, which is safe because only reads
//! go through here.
//!
//! Replies understood: simple strings, errors, integers, bulk strings and arrays of bulk
//! strings or nils (what `HMGET` and `HGETALL` answer). RESP3 is never negotiated.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Why a pipeline did not get its replies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// Connecting, writing or reading failed: the server may come back.
    #[error("{0}")]
    Io(String),
    /// Connecting or a pipeline's replies took longer than configured.
    #[error("{0}")]
    Timeout(String),
    /// The server answered the connection handshake (`AUTH`, `SELECT`) with an error.
    #[error("{0}")]
    Handshake(String),
    /// The server sent bytes this client cannot read.
    #[error("unreadable reply: {0}")]
    Protocol(String),
}

/// One reply of a pipeline. Spans index the connection's read buffer, arrays its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and other simple strings.
    Status,
    /// `-ERR ...`: the message's span.
    Error(Span),
    Integer(i64),
    /// A bulk string, `None` for the nil bulk string.
    Bulk(Option<Span>),
    /// An array: the range of its elements in the item list.
    Array {
        first: usize,
        len: usize,
    },
    /// The nil array.
    NilArray,
}

/// `start..end` in a read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The bytes of `buf` this span covers.
    fn of(self, buf: &[u8]) -> &[u8] {
        &buf[self.start as usize..self.end as usize]
    }
}

/// Appends `*n\r\n`, the header of a command of `n` arguments.
pub fn push_command_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends the header of a bulk string of `len` bytes; the caller appends the bytes and
/// `\r\n`.
pub fn push_bulk_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    push_decimal(out, len);
    out.extend_from_slice(b"\r\n");
}

/// Appends one argument as a bulk string.
pub fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    push_bulk_header(out, bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The line starting at `pos` (without its `\r\n`) and the position after it; `None` when
/// it has not all arrived.
fn line(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = &buf[pos..];
    let Some(cr) = rest.iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    match rest.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((&rest[..cr], pos + cr + 2))),
        Some(_) => Err(protocol("line not ended by CRLF", &rest[..cr])),
    }
}

fn protocol(what: &str, bytes: &[u8]) -> RespError {
    let shown: String = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned();
    RespError::Protocol(format!("{what}: {shown:?}"))
}

/// The integer line (`[-]digits\r\n`) at `pos` and the position after it; `None` when it
/// has not all arrived. Parsed in place: it heads every field of a reply.
fn int_line(buf: &[u8], pos: usize) -> Result<Option<(i64, usize)>, RespError> {
    let rest = &buf[pos.min(buf.len())..];
    let negative = rest.first() == Some(&b'-');
    let digits = usize::from(negative);
    let mut i = digits;
    let mut n: i64 = 0;
    while let Some(&d) = rest.get(i) {
        let digit = d.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        let digit = i64::from(digit);
        // Up to 18 digits cannot overflow; beyond, check.
        n = if i - digits < 18 {
            n * 10 + digit
        } else {
            n.checked_mul(10)
                .and_then(|n| n.checked_add(digit))
                .ok_or_else(|| protocol("integer out of range", rest))?
        };
        i += 1;
    }
    match rest.get(i) {
        None => Ok(None),
        Some(b'\r') if i > digits => match rest.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((if negative { -n } else { n }, pos + i + 2))),
            Some(_) => Err(protocol("line not ended by CRLF", rest)),
        },
        Some(_) => Err(protocol("not an integer", rest)),
    }
}

fn span(start: usize, end: usize) -> Result<Span, RespError> {
    match (u32::try_from(start), u32::try_from(end)) {
        (Ok(start), Ok(end)) => Ok(Span { start, end }),
        _ => Err(RespError::Protocol(
            "a pipeline's replies exceed 4 GiB".into(),
        )),
    }
}

/// Redis's `proto-max-bulk-len` default: no reply's string is longer.
const MAX_BULK: i64 = 512 << 20;

/// A bulk string whose header line `$len` ended at `pos`: its span and the position after it,
/// `Ok(None)` when its bytes have not all arrived.
fn bulk(buf: &[u8], pos: usize, len: i64) -> Result<Option<(Option<Span>, usize)>, RespError> {
    if len < 0 {
        return Ok(Some((None, pos)));
    }
    if len > MAX_BULK {
        return Err(RespError::Protocol(format!(
            "a bulk string of {len} bytes (Redis's own limit is 512 MiB)"
        )));
    }
    let end = pos.saturating_add(len as usize);
    if buf.len() < end.saturating_add(2) {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(protocol(
            "bulk string not ended by CRLF",
            &buf[end..end + 2],
        ));
    }
    Ok(Some((Some(span(pos, end)?), end + 2)))
}

/// Where parsing a connection's replies stands between reads. An array whose elements are
/// still arriving is resumed where it stopped rather than parsed again from its header (an
/// `HGETALL` reply of a wide hash spans several reads).
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    /// Where the next reply (or array element) starts.
    pos: usize,
    /// The array being read: its first item's index in the item list and its length.
    array: Option<(usize, usize)>,
}

/// Parses the next reply at `cursor` and moves past it; `Ok(None)` when it has not all
/// arrived (the cursor and `items` then keep what was parsed of it, to resume from).
fn next_reply(
    buf: &[u8],
    cursor: &mut Cursor,
    items: &mut Vec<Option<Span>>,
) -> Result<Option<Reply>, RespError> {
    if cursor.array.is_none() {
        let pos = cursor.pos;
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        let (reply, next) = match kind {
            b'+' | b'-' => {
                let Some((text, next)) = line(buf, pos + 1)? else {
                    return Ok(None);
                };
                if kind == b'+' {
                    (Reply::Status, next)
                } else {
                    (Reply::Error(span(pos + 1, pos + 1 + text.len())?), next)
                }
            }
            b':' => match int_line(buf, pos + 1)? {
                Some((n, next)) => (Reply::Integer(n), next),
                None => return Ok(None),
            },
            b'$' => match element(buf, pos)? {
                Some((s, next)) => (Reply::Bulk(s), next),
                None => return Ok(None),
            },
            b'*' => {
                let Some((len, next)) = int_line(buf, pos + 1)? else {
                    return Ok(None);
                };
                cursor.pos = next;
                if len < 0 {
                    return Ok(Some(Reply::NilArray));
                }
                cursor.array = Some((items.len(), len as usize));
                return next_reply(buf, cursor, items);
            }
            _ => return Err(protocol("unknown reply type", &buf[pos..])),
        };
        cursor.pos = next;
        return Ok(Some(reply));
    }
    let (first, len) = cursor.array.expect("checked above");
    while items.len() - first < len {
        let Some((s, next)) = element(buf, cursor.pos)? else {
            return Ok(None);
        };
        items.push(s);
        cursor.pos = next;
    }
    cursor.array = None;
    Ok(Some(Reply::Array { first, len }))
}

/// The bulk string at `pos` (an array's element: `None` for nil) and the position after it;
/// `Ok(None)` when it has not all arrived.
fn element(buf: &[u8], pos: usize) -> Result<Option<(Option<Span>, usize)>, RespError> {
    match buf.get(pos) {
        None => Ok(None),
        Some(b'$') => match int_line(buf, pos + 1)? {
            Some((len, after)) => bulk(buf, after, len),
            None => Ok(None),
        },
        Some(_) => Err(protocol("array element is not a bulk string", &buf[pos..])),
    }
}

/// One connection and its read buffer.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// Free room ensured before each read.
const READ_ROOM: usize = 64 << 10;
/// A read buffer larger than this after a batch is given back rather than kept.
const KEEP_BUFFER: usize = 4 << 20;

impl Conn {
    /// Reads until the next `n` replies sit whole at the front of the read buffer, parses
    /// them into `replies` and `items` (spans counted from the buffer's front) and returns where
    /// they end.
    async fn read_replies(
        &mut self,
        n: usize,
        replies: &mut Vec<Reply>,
        items: &mut Vec<Option<Span>>,
    ) -> Result<usize, RespError> {
        let mut cursor = Cursor::default();
        while replies.len() < n {
            match next_reply(&self.buf, &mut cursor, items)? {
                Some(reply) => replies.push(reply),
                None => {
                    if self.buf.capacity() - self.buf.len() < READ_ROOM / 4 {
                        self.buf.reserve(READ_ROOM);
                    }
                    if self.stream.read_buf(&mut self.buf).await.map_err(io)? == 0 {
                        return Err(RespError::Io("the server closed the connection".into()));
                    }
                }
            }
        }
        Ok(cursor.pos)
    }
}

fn io(e: std::io::Error) -> RespError {
    RespError::Io(e.to_string())
}

/// How a [`RespPool`] connects.
#[derive(Debug, Clone)]
pub struct RespConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `SELECT`ed after connecting when set and not 0.
    pub db: Option<i64>,
    pub connect_timeout: Duration,
    /// How long one batch of pipelines may take, writing included.
    pub response_timeout: Duration,
    /// Connections, each shared by the requests in flight (see the module documentation).
    pub lanes: usize,
}

/// The replies of one pipeline, with the bytes they were read from.
#[derive(Debug)]
pub struct Replies {
    buf: Bytes,
    replies: Vec<Reply>,
    items: Vec<Option<Span>>,
}

impl Replies {
    /// The replies, in command order.
    pub fn replies(&self) -> &[Reply] {
        &self.replies
    }

    /// The bytes of `span`.
    pub fn bytes(&self, span: Span) -> &[u8] {
        span.of(&self.buf)
    }

    /// The elements of an [`Reply::Array`]: each bulk string's bytes, `None` for nil.
    pub fn elements(&self, first: usize, len: usize) -> impl Iterator<Item = Option<&[u8]>> {
        self.items[first..first + len]
            .iter()
            .map(|s| s.map(|s| s.of(&self.buf)))
    }

    /// The text of an error reply.
    pub fn error_text(&self, span: Span) -> String {
        String::from_utf8_lossy(self.bytes(span)).into_owned()
    }
}

/// A pipeline waiting for its lane.
struct Job {
    request: Vec<u8>,
    /// Commands in `request` (replies to read).
    n: usize,
    reply: oneshot::Sender<Result<Replies, RespError>>,
}

/// A lane writes at most this many pipelines at once...
const BATCH_JOBS: usize = 256;
/// ... and stops adding pipelines once it has this many bytes to write.
const BATCH_BYTES: usize = 1 << 20;

/// Connections to one Redis server shared by concurrent requests. See the module
/// documentation.
pub struct RespPool {
    connector: Arc<Connector>,
    /// Each lane's queue, its task started on first use (and again should it have ended,
    /// e.g. with the runtime that ran it).
    lanes: Vec<Mutex<Option<mpsc::UnboundedSender<Job>>>>,
    next: AtomicUsize,
}

/// What a lane needs to (re)connect.
struct Connector {
    config: RespConfig,
    /// `AUTH`/`SELECT` to send on a new connection, and how many commands that is.
    handshake: (Vec<u8>, usize),
    /// Per lane: pipelines queued or in flight on it.
    pending: Vec<AtomicUsize>,
}

impl Connector {
    async fn connect(&self) -> Result<Conn, RespError> {
        let c = &self.config;
        let stream = tokio::time::timeout(
            c.connect_timeout,
            TcpStream::connect((c.host.as_str(), c.port)),
        )
        .await
        .map_err(|_| {
            RespError::Timeout(format!(
                "connecting timed out after {:?}",
                c.connect_timeout
            ))
        })?
        .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(READ_ROOM),
        };
        let (handshake, n) = &self.handshake;
        if *n > 0 {
            let (mut replies, mut items) = (Vec::new(), Vec::new());
            let end = self
                .timed(async {
                    conn.stream.write_all(handshake).await.map_err(io)?;
                    conn.read_replies(*n, &mut replies, &mut items).await
                })
                .await?;
            for reply in &replies {
                if let Reply::Error(s) = reply {
                    let text = String::from_utf8_lossy(s.of(&conn.buf));
                    return Err(RespError::Handshake(text.into_owned()));
                }
            }
            conn.buf.advance(end);
        }
        Ok(conn)
    }

    async fn timed<T>(
        &self,
        exchange: impl std::future::Future<Output = Result<T, RespError>>,
    ) -> Result<T, RespError> {
        tokio::time::timeout(self.config.response_timeout, exchange)
            .await
            .map_err(|_| {
                RespError::Timeout(format!(
                    "no reply within {:?}",
                    self.config.response_timeout
                ))
            })?
    }

    /// A lane's task: takes every pipeline queued since its last batch, writes them in one go
    /// and hands each its replies as soon as they are read.
    async fn drive(self: Arc<Self>, lane: usize, mut queue: mpsc::UnboundedReceiver<Job>) {
        let mut conn: Option<Conn> = None;
        let mut batch: VecDeque<Job> = VecDeque::new();
        let mut out: Vec<u8> = Vec::new();
        while let Some(job) = queue.recv().await {
            let mut bytes = job.request.len();
            batch.push_back(job);
            // Under concurrent load, let the requests that are ready to run queue their
            // pipelines first: the batch then carries many (one write, one read for all). A
            // lone request goes at once (the extra turn of the scheduler cost a gRPC request
            // at one connection a fifth of its rate).
            let in_flight: usize = self.pending.iter().map(|p| p.load(Ordering::Relaxed)).sum();
            if in_flight > 1 {
                tokio::task::yield_now().await;
            }
            while batch.len() < BATCH_JOBS && bytes < BATCH_BYTES {
                match queue.try_recv() {
                    Ok(job) => {
                        bytes += job.request.len();
                        batch.push_back(job);
                    }
                    Err(_) => break,
                }
            }
            let jobs = batch.len();
            // A request that stopped waiting (its client went away) is not sent.
            batch.retain(|job| !job.reply.is_closed());
            if let Err(e) = self.run_batch(&mut conn, &mut batch, &mut out).await {
                conn = None;
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
            self.pending[lane].fetch_sub(jobs, Ordering::Relaxed);
        }
    }

    /// Sends `batch` on `conn` (connecting first when there is none) and delivers the replies;
    /// delivered jobs leave `batch`. When a connection that already served a batch fails on
    /// I/O (typically: the server restarted while it sat idle), the undelivered pipelines are
    /// sent once more on a fresh connection, which is safe because only reads go through here.
    /// A timeout is not retried: the server is there but slow.
    async fn run_batch(
        &self,
        conn: &mut Option<Conn>,
        batch: &mut VecDeque<Job>,
        out: &mut Vec<u8>,
    ) -> Result<(), RespError> {
        let mut retried = false;
        while !batch.is_empty() {
            let reused = conn.is_some();
            let c = match conn {
                Some(c) => c,
                None => conn.insert(self.connect().await?),
            };
            match self.timed(exchange(c, batch, out)).await {
                Ok(()) => {}
                Err(RespError::Io(_)) if reused && !retried => {
                    *conn = None;
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Writes every pipeline of `batch`, then reads their replies in order, handing each job its
/// own as soon as they are whole.
async fn exchange(
    conn: &mut Conn,
    batch: &mut VecDeque<Job>,
    out: &mut Vec<u8>,
) -> Result<(), RespError> {
    if let (Some(job), 1) = (batch.front(), batch.len()) {
        conn.stream.write_all(&job.request).await.map_err(io)?;
    } else {
        out.clear();
        for job in batch.iter() {
            out.extend_from_slice(&job.request);
        }
        conn.stream.write_all(out).await.map_err(io)?;
    }
    while let Some(job) = batch.front() {
        let mut replies = Vec::with_capacity(job.n);
        let mut items = Vec::new();
        let end = conn.read_replies(job.n, &mut replies, &mut items).await?;
        let buf = conn.buf.split_to(end).freeze();
        let job = batch.pop_front().expect("front exists");
        let _ = job.reply.send(Ok(Replies {
            buf,
            replies,
            items,
        }));
    }
    // Anything more would be read as the next batch's replies: the connection is out of step.
    if !conn.buf.is_empty() {
        return Err(RespError::Protocol(format!(
            "{} bytes after the last expected reply",
            conn.buf.len()
        )));
    }
    // A buffer a large batch grew is not kept for the small ones.
    if conn.buf.capacity() > KEEP_BUFFER {
        conn.buf = BytesMut::with_capacity(READ_ROOM);
    }
    Ok(())
}

impl RespPool {
    /// A pool that connects lazily, on each lane's first request.
    pub fn new(config: RespConfig) -> Self {
        let mut handshake = Vec::new();
        let mut commands = 0;
        if let Some(password) = &config.password {
            match &config.username {
                Some(user) => {
                    push_command_header(&mut handshake, 3);
                    push_bulk(&mut handshake, b"AUTH");
                    push_bulk(&mut handshake, user.as_bytes());
                }
                None => {
                    push_command_header(&mut handshake, 2);
                    push_bulk(&mut handshake, b"AUTH");
                }
            }
            push_bulk(&mut handshake, password.as_bytes());
            commands += 1;
        }
        if let Some(db) = config.db.filter(|db| *db != 0) {
            push_command_header(&mut handshake, 2);
            push_bulk(&mut handshake, b"SELECT");
            push_bulk(&mut handshake, db.to_string().as_bytes());
            commands += 1;
        }
        let n = config.lanes.max(1);
        RespPool {
            connector: Arc::new(Connector {
                config,
                handshake: (handshake, commands),
                pending: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            }),
            lanes: (0..n).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Sends `request`, a pipeline of `n` read-only commands, and returns their replies.
    pub async fn query(&self, request: Vec<u8>, n: usize) -> Result<Replies, RespError> {
        let (reply, replied) = oneshot::channel();
        self.submit(Job { request, n, reply });
        replied
            .await
            .unwrap_or_else(|_| Err(RespError::Io("the connection's task ended".into())))
    }

    /// Queues `job` on the lane with the fewest pipelines pending (a large request holding one
    /// lane does not hold up the requests after it), starting the lane's task when it has
    /// none (or it ended).
    fn submit(&self, job: Job) {
        let pending = &self.connector.pending;
        let n = pending.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let lane = (0..n)
            .map(|i| (first + i) % n)
            .min_by_key(|&i| pending[i].load(Ordering::Relaxed))
            .expect("a pool has at least one lane");
        let mut queue = self.lanes[lane].lock().unwrap_or_else(|e| e.into_inner());
        pending[lane].fetch_add(1, Ordering::Relaxed);
        let unsent = match queue.as_ref() {
            Some(q) => q.send(job).err().map(|mpsc::error::SendError(job)| job),
            None => Some(job),
        };
        if let Some(job) = unsent {
            // The lane's task ended with jobs it never finished: count afresh.
            pending[lane].store(1, Ordering::Relaxed);
            let (q, jobs) = mpsc::unbounded_channel();
            tokio::spawn(Arc::clone(&self.connector).drive(lane, jobs));
            q.send(job)
                .unwrap_or_else(|_| unreachable!("the lane's task holds the receiver"));
            *queue = Some(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reply of `buf` and the array items, `None` when the last is incomplete.
    type Parsed = Option<(Vec<Reply>, Vec<Option<Span>>)>;

    fn parse_all(buf: &[u8]) -> Result<Parsed, RespError> {
        let mut items = Vec::new();
        let mut replies = Vec::new();
        let mut cursor = Cursor::default();
        while cursor.pos < buf.len() || cursor.array.is_some() {
            match next_reply(buf, &mut cursor, &mut items)? {
                Some(r) => replies.push(r),
                None => return Ok(None),
            }
        }
        Ok(Some((replies, items)))
    }

    #[test]
    fn commands_are_written_as_resp_arrays() {
        let mut out = Vec::new();
        push_command_header(&mut out, 3);
        push_bulk(&mut out, b"HMGET");
        push_bulk(&mut out, b"k\r\n");
        push_bulk(&mut out, b"");
        assert_eq!(out, b"*3\r\n$5\r\nHMGET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n");
        let mut n = Vec::new();
        push_decimal(&mut n, 0);
        push_decimal(&mut n, 1234567890);
        assert_eq!(n, b"01234567890");
    }

    #[test]
    fn parses_every_reply_kind() {
        let buf = b"+OK\r\n-WRONGTYPE no\r\n:-42\r\n$3\r\na\r\n\r\n$-1\r\n*3\r\n$1\r\nx\r\n$-1\r\n$0\r\n\r\n*-1\r\n*0\r\n";
        let (replies, items) = parse_all(buf).unwrap().unwrap();
        assert_eq!(replies.len(), 8);
        assert_eq!(replies[0], Reply::Status);
        let Reply::Error(e) = replies[1] else {
            panic!("{:?}", replies[1])
        };
        assert_eq!(&buf[e.start as usize..e.end as usize], b"WRONGTYPE no");
        assert_eq!(replies[2], Reply::Integer(-42));
        let Reply::Bulk(Some(s)) = replies[3] else {
            panic!()
        };
        // A bulk string may hold CRLF: its length decides.
        assert_eq!(&buf[s.start as usize..s.end as usize], b"a\r\n");
        assert_eq!(replies[4], Reply::Bulk(None));
        assert_eq!(replies[5], Reply::Array { first: 0, len: 3 });
        let got: Vec<Option<&[u8]>> = items
            .iter()
            .map(|s| s.map(|s| &buf[s.start as usize..s.end as usize]))
            .collect();
        assert_eq!(got, vec![Some(&b"x"[..]), None, Some(&b""[..])]);
        assert_eq!(replies[6], Reply::NilArray);
        assert_eq!(replies[7], Reply::Array { first: 3, len: 0 });
    }

    #[test]
    fn every_incomplete_prefix_asks_for_more_and_resumes_where_it_stopped() {
        let buf = b"*3\r\n$3\r\nabc\r\n$-1\r\n$2\r\nde\r\n:7\r\n";
        let whole = parse_all(buf).unwrap().unwrap();
        assert_eq!(
            whole.0,
            vec![Reply::Array { first: 0, len: 3 }, Reply::Integer(7)]
        );
        for cut in 0..buf.len() {
            // The bytes arrive in two reads, split at `cut`.
            let (mut cursor, mut items, mut replies) = (Cursor::default(), Vec::new(), Vec::new());
            while let Some(r) = next_reply(&buf[..cut], &mut cursor, &mut items).unwrap() {
                replies.push(r);
            }
            assert!(replies.len() < 2, "{cut}");
            while let Some(r) = next_reply(buf, &mut cursor, &mut items).unwrap() {
                replies.push(r);
                if cursor.pos == buf.len() {
                    break;
                }
            }
            assert_eq!((replies, items), whole, "{cut}");
            assert_eq!(cursor.pos, buf.len(), "{cut}");
        }
    }

    #[test]
    fn integers_up_to_i64() {
        let int = |text: &[u8]| int_line(text, 0).map(|r| r.map(|(n, _)| n));
        assert_eq!(int(b"9223372036854775807\r\n").unwrap(), Some(i64::MAX));
        assert_eq!(
            int(b"-123456789012345678\r\n").unwrap(),
            Some(-123456789012345678)
        );
        assert!(int(b"9223372036854775808\r\n").is_err());
        assert_eq!(int(b"12").unwrap(), None);
        assert_eq!(int(b"12\r").unwrap(), None);
        assert!(int(b"-\r\n").is_err());
        assert!(int(b"\r\n").is_err());
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for bad in [
            &b"?x\r\n"[..],
            b"$3\r\nabcd\r\n",
            b":12a\r\n",
            b"*1\r\n:1\r\n",
            b"+OK\rX",
            b"\r\n",
        ] {
            assert!(
                matches!(parse_all(bad), Err(RespError::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
