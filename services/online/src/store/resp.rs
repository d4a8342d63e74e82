//! A lean RESP2 client for the serving path's reads from a single Redis server.
//!
//! The `redis` crate parses every reply into a `redis::Value` tree, one heap-allocated `Vec`
//! per bulk string, through a `combine` parser running in the connection's own task: for a
//! request of 10 views × 5 features × 100 entities (6,000 fields) that was 44 % of the
//! server's instructions (BENCHMARKS.md). Here a pipeline is written as RESP bytes into one
//! buffer, the replies are read into one buffer, and each bulk string is handed out as a
//! slice of it, valid until the connection goes back to its pool.
//!
//! Connections are pooled and each serves one request at a time, so the request's own task
//! does the I/O (no connection task and channel hops in between). At most `max_open`
//! requests hold a connection at once; the others wait for one. A connection that fails is
//! dropped. When one taken from the idle pool fails on I/O (typically: the server restarted
//! while it sat idle), every idle connection is dropped and the pipeline is sent once more on
//! a fresh connection; that is safe because only reads go through here.
//!
//! Replies understood: simple strings, errors, integers, bulk strings and arrays of bulk
//! strings or nils (what `HMGET` answers). RESP3 is never negotiated.

use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};

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
    let mut i = usize::from(negative);
    let mut n: i64 = 0;
    loop {
        match rest.get(i) {
            None => return Ok(None),
            Some(&d) if d.is_ascii_digit() => {
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(i64::from(d - b'0')))
                    .ok_or_else(|| protocol("integer out of range", rest))?;
                i += 1;
            }
            Some(b'\r') if i > usize::from(negative) => break,
            Some(_) => return Err(protocol("not an integer", rest)),
        }
    }
    match rest.get(i + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((if negative { -n } else { n }, pos + i + 2))),
        Some(_) => Err(protocol("line not ended by CRLF", rest)),
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

/// Parses the reply starting at `pos`: the reply and the position after it, `Ok(None)` when it
/// has not all arrived (`items` is then as it was).
fn parse_reply(
    buf: &[u8],
    pos: usize,
    items: &mut Vec<Option<Span>>,
) -> Result<Option<(Reply, usize)>, RespError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let reply = match kind {
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
        b'$' => match int_line(buf, pos + 1)? {
            Some((len, next)) => match bulk(buf, next, len)? {
                Some((s, after)) => (Reply::Bulk(s), after),
                None => return Ok(None),
            },
            None => return Ok(None),
        },
        b'*' => {
            let Some((len, next)) = int_line(buf, pos + 1)? else {
                return Ok(None);
            };
            if len < 0 {
                return Ok(Some((Reply::NilArray, next)));
            }
            let first = items.len();
            let mut at = next;
            for _ in 0..len {
                let element = match buf.get(at) {
                    None => None,
                    Some(b'$') => match int_line(buf, at + 1)? {
                        Some((n, after)) => bulk(buf, after, n)?,
                        None => None,
                    },
                    Some(_) => {
                        return Err(protocol("array element is not a bulk string", &buf[at..]));
                    }
                };
                let Some((s, after)) = element else {
                    items.truncate(first);
                    return Ok(None);
                };
                items.push(s);
                at = after;
            }
            (
                Reply::Array {
                    first,
                    len: len as usize,
                },
                at,
            )
        }
        _ => return Err(protocol("unknown reply type", &buf[pos..])),
    };
    Ok(Some(reply))
}

/// One connection with its buffers (kept across requests, so a warm connection allocates
/// nothing).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    replies: Vec<Reply>,
    items: Vec<Option<Span>>,
}

/// A read buffer larger than this after a request is given back rather than pooled.
const KEEP_BUFFER: usize = 4 << 20;
/// Free room ensured before each read.
const READ_ROOM: usize = 64 << 10;

impl Conn {
    /// Sends `request` (`n` commands) and reads their `n` replies.
    async fn exchange(&mut self, request: &[u8], n: usize) -> Result<(), RespError> {
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
        self.buf.clear();
        self.replies.clear();
        self.items.clear();
        self.stream.write_all(request).await.map_err(io)?;
        let mut pos = 0;
        while self.replies.len() < n {
            match parse_reply(&self.buf, pos, &mut self.items)? {
                Some((reply, next)) => {
                    self.replies.push(reply);
                    pos = next;
                }
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
        if pos != self.buf.len() {
            return Err(RespError::Protocol(format!(
                "{} bytes after the last expected reply",
                self.buf.len() - pos
            )));
        }
        Ok(())
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
    /// How long one pipeline may take, writing included.
    pub response_timeout: Duration,
    /// Connections held at once (requests beyond it wait).
    pub max_open: usize,
}

/// Pooled connections to one Redis server. See the module documentation.
pub struct RespPool {
    config: RespConfig,
    /// `AUTH`/`SELECT` to send on a new connection, and how many commands that is.
    handshake: (Vec<u8>, usize),
    idle: Mutex<Vec<Conn>>,
    open: Semaphore,
}

/// The replies of one pipeline, borrowed from its connection, which goes back to the pool
/// when this is dropped.
pub struct Replies<'p> {
    pool: &'p RespPool,
    conn: Option<Conn>,
    _permit: SemaphorePermit<'p>,
}

impl Drop for Replies<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }
}

impl Replies<'_> {
    fn conn(&self) -> &Conn {
        self.conn.as_ref().expect("held until dropped")
    }

    /// The replies, in command order.
    pub fn replies(&self) -> &[Reply] {
        &self.conn().replies
    }

    /// The bytes of `span`.
    pub fn bytes(&self, span: Span) -> &[u8] {
        span.of(&self.conn().buf)
    }

    /// The elements of an [`Reply::Array`]: each bulk string's bytes, `None` for nil.
    pub fn elements(&self, first: usize, len: usize) -> impl Iterator<Item = Option<&[u8]>> {
        let conn = self.conn();
        conn.items[first..first + len]
            .iter()
            .map(move |s| s.map(|s| s.of(&conn.buf)))
    }

    /// The text of an error reply.
    pub fn error_text(&self, span: Span) -> String {
        String::from_utf8_lossy(self.bytes(span)).into_owned()
    }
}

impl RespPool {
    /// A pool that connects lazily, on the first request.
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
        let open = Semaphore::new(config.max_open.max(1));
        RespPool {
            config,
            handshake: (handshake, commands),
            idle: Mutex::new(Vec::new()),
            open,
        }
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

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
            buf: Vec::with_capacity(READ_ROOM),
            replies: Vec::new(),
            items: Vec::new(),
        };
        let (handshake, n) = &self.handshake;
        if *n > 0 {
            self.timed(conn.exchange(handshake, *n)).await?;
            for reply in &conn.replies {
                if let Reply::Error(s) = reply {
                    let text = String::from_utf8_lossy(s.of(&conn.buf));
                    return Err(RespError::Handshake(text.into_owned()));
                }
            }
        }
        Ok(conn)
    }

    async fn timed(
        &self,
        exchange: impl std::future::Future<Output = Result<(), RespError>>,
    ) -> Result<(), RespError> {
        tokio::time::timeout(self.config.response_timeout, exchange)
            .await
            .map_err(|_| {
                RespError::Timeout(format!(
                    "no reply within {:?}",
                    self.config.response_timeout
                ))
            })?
    }

    /// Sends `request`, a pipeline of `n` read-only commands, and returns their replies.
    pub async fn query(&self, request: &[u8], n: usize) -> Result<Replies<'_>, RespError> {
        let permit = self
            .open
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        if let Some(mut conn) = self.take_idle() {
            match self.timed(conn.exchange(request, n)).await {
                Ok(()) => {
                    return Ok(Replies {
                        pool: self,
                        conn: Some(conn),
                        _permit: permit,
                    });
                }
                // Failed on I/O: the connection went stale (the server restarted or closed
                // it), and so, likely, did every idle one. Retry on a fresh connection. A
                // timeout is not retried: the server is there but slow.
                Err(RespError::Io(_)) => {
                    self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
                Err(e) => return Err(e),
            }
        }
        let mut conn = self.connect().await?;
        self.timed(conn.exchange(request, n)).await?;
        Ok(Replies {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
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
        let mut pos = 0;
        while pos < buf.len() {
            match parse_reply(buf, pos, &mut items)? {
                Some((r, next)) => {
                    replies.push(r);
                    pos = next;
                }
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
    fn every_incomplete_prefix_asks_for_more_and_leaves_items_alone() {
        let buf = b"*2\r\n$3\r\nabc\r\n$-1\r\n";
        for cut in 0..buf.len() {
            let mut items = vec![None];
            assert_eq!(
                parse_reply(&buf[..cut], 0, &mut items).unwrap(),
                None,
                "{cut}"
            );
            assert_eq!(items, vec![None], "{cut}");
        }
        let mut items = Vec::new();
        let (reply, next) = parse_reply(buf, 0, &mut items).unwrap().unwrap();
        assert_eq!(reply, Reply::Array { first: 0, len: 2 });
        assert_eq!(next, buf.len());
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
