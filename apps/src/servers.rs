//! The servers `fourtuple up --serve` runs: echo (RFC 862), discard (RFC 863), chargen
//! (RFC 864) and a minimal HTTP/1.1 server, as one [`App`] on the event loop.
//!
//! This module owns the listeners it opens, the connections they accept, and each
//! connection's buffers and protocol state. It must never block, read a clock of its own,
//! touch a device, or hold unbounded data: echo stops reading while its reply is queued,
//! HTTP bounds the request head, and the number of connections is capped.
//!
//! HTTP serves `GET /` (a short text page), `GET /stats` (the stack's counters, TIME_WAIT
//! size and per-state counts as JSON) and `HEAD` of both; keep-alive is the default for
//! HTTP/1.1 and opt-in for HTTP/1.0 (`Connection: keep-alive`); `Connection: close` makes
//! the server close after the response, which puts TIME_WAIT on the server's side.

use std::io;
use std::net::{IpAddr, SocketAddr};

use fourtuple_netdev::{App, Control};
use fourtuple_stack::{ConnHandle, Error, Event, Instant, ListenerHandle, Stack};
use hashbrown::HashMap;
use serde_json::{json, Map, Value};

/// The largest request head (request line and headers) the HTTP server reads.
pub const MAX_HTTP_HEAD: usize = 16 * 1024;
/// Connections served at once; further ones are reset.
pub const MAX_CONNECTIONS: usize = 65_536;
/// Bytes read per `recv` call.
const READ_CHUNK: usize = 64 * 1024;

/// One kind of service.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// Sends back every byte it receives (RFC 862).
    Echo,
    /// Reads and drops every byte (RFC 863).
    Discard,
    /// Sends the RFC 864 character pattern until the client closes; ignores input.
    Chargen,
    /// Minimal HTTP/1.1: `GET /`, `GET /stats`.
    Http,
}

impl ServiceKind {
    /// The name used in `--serve`.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Echo => "echo",
            ServiceKind::Discard => "discard",
            ServiceKind::Chargen => "chargen",
            ServiceKind::Http => "http",
        }
    }
}

/// A service on a port.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// What it does.
    pub kind: ServiceKind,
    /// The TCP port it listens on.
    pub port: u16,
}

/// The value of `--serve`: the services, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceList(pub Vec<Service>);

/// [`parse_serve`] for clap.
pub fn parse_service_list(s: &str) -> Result<ServiceList, String> {
    parse_serve(s).map(ServiceList)
}

/// Parses `--serve`: a comma-separated list of `KIND:PORT`, e.g. `echo:7,discard:9,http:80`.
pub fn parse_serve(s: &str) -> Result<Vec<Service>, String> {
    let mut out: Vec<Service> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (kind, port) = item.split_once(':').ok_or_else(|| {
            format!("service {item:?} is not KIND:PORT (e.g. echo:7, discard:9, http:80)")
        })?;
        let kind = match kind.trim() {
            "echo" => ServiceKind::Echo,
            "discard" => ServiceKind::Discard,
            "chargen" => ServiceKind::Chargen,
            "http" => ServiceKind::Http,
            other => {
                return Err(format!(
                    "unknown service {other:?}: expected echo, discard, chargen or http"
                ))
            }
        };
        let port: u16 = port
            .trim()
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("service {item:?}: {port:?} is not a port (1-65535)"))?;
        if out.iter().any(|s| s.port == port) {
            return Err(format!("port {port} is given twice in --serve"));
        }
        out.push(Service { kind, port });
    }
    Ok(out)
}

/// What the servers did, for the final report.
#[derive(Clone, Debug, Default)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections reset because [`MAX_CONNECTIONS`] were open.
    pub rejected: u64,
    /// Connections that ended with an error (reset by the peer, timed out).
    pub errors: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes queued to clients.
    pub bytes_out: u64,
    /// HTTP responses sent.
    pub http_responses: u64,
}

impl ServerStats {
    /// Every counter as (name, value).
    pub fn entries(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("accepted", self.accepted),
            ("rejected", self.rejected),
            ("errors", self.errors),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
            ("http_responses", self.http_responses),
        ]
    }
}

#[derive(Debug)]
struct Conn {
    kind: ServiceKind,
    /// Bytes waiting to be sent, from `out_off` on.
    out: Vec<u8>,
    out_off: usize,
    /// HTTP: request bytes not yet parsed.
    inbuf: Vec<u8>,
    /// Close once `out` is sent (HTTP `Connection: close`, or the peer closed).
    close_after_flush: bool,
    /// Chargen: position in the pattern.
    pattern_pos: usize,
}

/// Every `--serve` service, as one app on the event loop.
#[derive(Debug)]
pub struct Servers {
    services: Vec<Service>,
    listeners: HashMap<ListenerHandle, ServiceKind>,
    conns: HashMap<ConnHandle, Conn>,
    stats: ServerStats,
    buf: Vec<u8>,
}

impl Servers {
    /// Servers for `services`; nothing listens until [`Servers::open`].
    pub fn new(services: Vec<Service>) -> Servers {
        Servers {
            services,
            listeners: HashMap::new(),
            conns: HashMap::new(),
            stats: ServerStats::default(),
            buf: vec![0; READ_CHUNK],
        }
    }

    /// Opens one listener per service on `ip` (which must be one of the stack's addresses).
    pub fn open(&mut self, stack: &mut Stack, ip: IpAddr) -> io::Result<()> {
        for s in &self.services {
            let h = stack
                .listen(SocketAddr::new(ip, s.port), 1024)
                .map_err(|e| {
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!("cannot listen on {ip}:{} ({}): {e}", s.port, s.kind.name()),
                    )
                })?;
            self.listeners.insert(h, s.kind);
        }
        Ok(())
    }

    /// The services.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// What the servers did so far.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Connections being served now.
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    fn accept_all(&mut self, stack: &mut Stack, now: Instant, l: ListenerHandle) {
        let Some(&kind) = self.listeners.get(&l) else {
            return;
        };
        while let Ok(Some(h)) = stack.accept(l) {
            if self.conns.len() >= MAX_CONNECTIONS {
                self.stats.rejected += 1;
                let _ = stack.abort(now, h);
                continue;
            }
            self.stats.accepted += 1;
            self.conns.insert(
                h,
                Conn {
                    kind,
                    out: Vec::new(),
                    out_off: 0,
                    inbuf: Vec::new(),
                    close_after_flush: false,
                    pattern_pos: 0,
                },
            );
            // Data may have come with the handshake's last ACK.
            self.pump(stack, now, h);
        }
    }

    /// Moves one connection on as far as the stack allows.
    fn pump(&mut self, stack: &mut Stack, now: Instant, h: ConnHandle) {
        let Some(mut c) = self.conns.remove(&h) else {
            return;
        };
        if self.drive(stack, now, h, &mut c) {
            self.conns.insert(h, c);
        }
    }

    /// True while the connection stays open.
    fn drive(&mut self, stack: &mut Stack, now: Instant, h: ConnHandle, c: &mut Conn) -> bool {
        // Bounded: each round either sends, reads, or returns.
        for _ in 0..1024 {
            // 1. Flush what is queued.
            while c.out_off < c.out.len() {
                match stack.send(now, h, &c.out[c.out_off..]) {
                    Ok(n) => c.out_off += n,
                    Err(Error::WouldBlock) => return true,
                    Err(_) => return self.fail(stack, now, h),
                }
            }
            c.out.clear();
            c.out_off = 0;
            if c.close_after_flush {
                let _ = stack.close(now, h);
                return false;
            }
            if c.kind == ServiceKind::Chargen {
                fill_chargen(&mut c.out, &mut c.pattern_pos, READ_CHUNK);
                self.stats.bytes_out += c.out.len() as u64;
            }
            // 2. Read.
            match stack.recv(now, h, &mut self.buf) {
                Ok(0) => {
                    // The peer closed its side: finish what is queued, then close ours.
                    if c.kind == ServiceKind::Chargen {
                        c.out.clear();
                    }
                    c.close_after_flush = true;
                }
                Ok(n) => {
                    self.stats.bytes_in += n as u64;
                    match c.kind {
                        ServiceKind::Echo => {
                            c.out.extend_from_slice(&self.buf[..n]);
                            self.stats.bytes_out += n as u64;
                        }
                        ServiceKind::Discard | ServiceKind::Chargen => {}
                        ServiceKind::Http => {
                            c.inbuf.extend_from_slice(&self.buf[..n]);
                            self.serve_http(stack, c);
                        }
                    }
                }
                Err(Error::WouldBlock) => {
                    if c.kind == ServiceKind::Chargen && !c.out.is_empty() {
                        continue;
                    }
                    return true;
                }
                Err(_) => return self.fail(stack, now, h),
            }
        }
        true
    }

    fn fail(&mut self, stack: &mut Stack, now: Instant, h: ConnHandle) -> bool {
        self.stats.errors += 1;
        let _ = stack.abort(now, h);
        false
    }

    /// Answers every complete request in `c.inbuf`.
    fn serve_http(&mut self, stack: &Stack, c: &mut Conn) {
        while !c.close_after_flush {
            match parse_request(&c.inbuf) {
                Parsed::Incomplete => {
                    if c.inbuf.len() > MAX_HTTP_HEAD {
                        let r = response(400, "text/plain", b"request head too large\n", false);
                        self.queue(c, r, true);
                    }
                    return;
                }
                Parsed::Bad(why) => {
                    let body = format!("bad request: {why}\n");
                    let r = response(400, "text/plain", body.as_bytes(), false);
                    self.queue(c, r, true);
                    return;
                }
                Parsed::Request(req) => {
                    c.inbuf.drain(..req.consumed);
                    let (status, ctype, body): (u16, &str, Vec<u8>) =
                        match (req.method.as_str(), req.path.as_str()) {
                            ("GET" | "HEAD", "/") => (
                                200,
                                "text/plain; charset=utf-8",
                                format!(
                                    "fourtuple {}: a userspace TCP/IP stack answering you\n",
                                    env!("CARGO_PKG_VERSION")
                                )
                                .into_bytes(),
                            ),
                            ("GET" | "HEAD", "/stats") => (
                                200,
                                "application/json",
                                format!("{}\n", stats_json(stack, &self.stats)).into_bytes(),
                            ),
                            ("GET" | "HEAD", _) => (404, "text/plain", b"not found\n".to_vec()),
                            _ => (405, "text/plain", b"method not allowed\n".to_vec()),
                        };
                    let body = if req.method == "HEAD" {
                        HeadBody::Length(body.len())
                    } else {
                        HeadBody::Bytes(body)
                    };
                    let r = response_with(status, ctype, body, req.keep_alive);
                    self.queue(c, r, !req.keep_alive);
                }
            }
        }
    }

    fn queue(&mut self, c: &mut Conn, bytes: Vec<u8>, close: bool) {
        self.stats.bytes_out += bytes.len() as u64;
        self.stats.http_responses += 1;
        c.out.extend_from_slice(&bytes);
        c.close_after_flush = close;
    }
}

impl App for Servers {
    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: Event) {
        match event {
            Event::Incoming { listener } => self.accept_all(stack, now, listener),
            Event::Conn { handle, .. } => self.pump(stack, now, handle),
        }
    }

    fn poll(&mut self, _stack: &mut Stack, _now: Instant) -> Control {
        Control::Continue
    }
}

/// The stack's counters (non-zero ones), TIME_WAIT size, per-state counts and the servers'
/// own counters, as served by `GET /stats`.
pub fn stats_json(stack: &Stack, servers: &ServerStats) -> Value {
    let counters: Map<String, Value> = stack
        .counters()
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let states: Map<String, Value> = stack
        .state_counts()
        .into_iter()
        .map(|(s, n)| (format!("{s:?}"), json!(n)))
        .collect();
    let served: Map<String, Value> = servers
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "time_wait": stack.time_wait().len(),
        "connections": stack.connection_count(),
        "states": states,
        "counters": counters,
        "servers": served,
    })
}

/// Appends up to `n` bytes of the RFC 864 pattern: lines of 72 printable characters, each
/// starting one character later than the previous one, ending in CR LF.
fn fill_chargen(out: &mut Vec<u8>, pos: &mut usize, n: usize) {
    const PRINTABLE: usize = 95; // ' ' ..= '~'
    const LINE: usize = 74; // 72 characters + CR LF
    for _ in 0..n {
        let line = *pos / LINE;
        let col = *pos % LINE;
        let b = match col {
            72 => b'\r',
            73 => b'\n',
            _ => b' ' + ((line + col) % PRINTABLE) as u8,
        };
        out.push(b);
        *pos = (*pos + 1) % (LINE * PRINTABLE);
    }
}

struct Request {
    method: String,
    path: String,
    keep_alive: bool,
    /// Head plus body length.
    consumed: usize,
}

enum Parsed {
    Incomplete,
    Bad(&'static str),
    Request(Request),
}

/// Parses one request head (and skips a `Content-Length` body) at the start of `buf`.
fn parse_request(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Parsed::Incomplete;
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Bad("request head is not UTF-8");
    };
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad("malformed request line");
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Parsed::Bad("unsupported HTTP version"),
    };
    let mut keep_alive = http11;
    let mut body_len = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Bad("malformed header line");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_HTTP_HEAD => body_len = n,
                _ => return Parsed::Bad("unsupported Content-Length"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad("chunked request bodies are not supported");
        }
    }
    let consumed = end + 4 + body_len;
    if buf.len() < consumed {
        return Parsed::Incomplete;
    }
    let path = target.split('?').next().unwrap_or("/").to_string();
    Parsed::Request(Request {
        method: method.to_string(),
        path,
        keep_alive,
        consumed,
    })
}

enum HeadBody {
    Bytes(Vec<u8>),
    /// HEAD: the length the body would have.
    Length(usize),
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

fn response(status: u16, ctype: &str, body: &[u8], keep_alive: bool) -> Vec<u8> {
    response_with(status, ctype, HeadBody::Bytes(body.to_vec()), keep_alive)
}

fn response_with(status: u16, ctype: &str, body: HeadBody, keep_alive: bool) -> Vec<u8> {
    let len = match &body {
        HeadBody::Bytes(b) => b.len(),
        HeadBody::Length(n) => *n,
    };
    let mut r = format!(
        "HTTP/1.1 {status} {}\r\nServer: fourtuple\r\nContent-Type: {ctype}\r\n\
         Content-Length: {len}\r\nConnection: {}\r\n",
        reason(status),
        if keep_alive { "keep-alive" } else { "close" }
    );
    if status == 405 {
        r.push_str("Allow: GET, HEAD\r\n");
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    if let HeadBody::Bytes(b) = body {
        r.extend_from_slice(&b);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_lists_parse() {
        assert_eq!(
            parse_serve("echo:7,discard:9,http:80").unwrap(),
            vec![
                Service {
                    kind: ServiceKind::Echo,
                    port: 7
                },
                Service {
                    kind: ServiceKind::Discard,
                    port: 9
                },
                Service {
                    kind: ServiceKind::Http,
                    port: 80
                },
            ]
        );
        assert_eq!(parse_serve("").unwrap(), vec![]);
        assert!(parse_serve("echo").unwrap_err().contains("KIND:PORT"));
        assert!(parse_serve("ftp:21")
            .unwrap_err()
            .contains("unknown service"));
        assert!(parse_serve("echo:0").unwrap_err().contains("not a port"));
        assert!(parse_serve("echo:7,http:7").unwrap_err().contains("twice"));
    }

    fn req(s: &str) -> Request {
        match parse_request(s.as_bytes()) {
            Parsed::Request(r) => r,
            Parsed::Incomplete => panic!("incomplete: {s:?}"),
            Parsed::Bad(why) => panic!("bad: {why}: {s:?}"),
        }
    }

    #[test]
    fn keep_alive_rules() {
        assert!(req("GET / HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive);
        assert!(!req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!req("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        let r = req("GET /stats?x=1 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(r.path, "/stats");
        assert_eq!(r.consumed, "GET /stats?x=1 HTTP/1.1\r\n\r\n".len());
    }

    #[test]
    fn bodies_and_bad_requests() {
        let r = "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(req(r).consumed, r.len());
        assert!(matches!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"),
            Parsed::Incomplete
        ));
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\n"),
            Parsed::Incomplete
        ));
        assert!(matches!(
            parse_request(b"GET /\r\n\r\n"),
            Parsed::Bad("malformed request line")
        ));
        assert!(matches!(
            parse_request(b"GET / HTTP/2\r\n\r\n"),
            Parsed::Bad(_)
        ));
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nnocolon\r\n\r\n"),
            Parsed::Bad(_)
        ));
    }

    #[test]
    fn responses_have_length_and_connection() {
        let r = String::from_utf8(response(200, "text/plain", b"hi\n", true)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Length: 3\r\n"), "{r}");
        assert!(r.contains("Connection: keep-alive\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nhi\n"), "{r}");
        let h = String::from_utf8(response_with(
            200,
            "text/plain",
            HeadBody::Length(10),
            false,
        ))
        .unwrap();
        assert!(
            h.contains("Content-Length: 10\r\n") && h.ends_with("\r\n\r\n"),
            "{h}"
        );
    }

    #[test]
    fn chargen_pattern_is_rfc864() {
        let mut out = Vec::new();
        let mut pos = 0;
        fill_chargen(&mut out, &mut pos, 74 * 2);
        let first = &out[..74];
        assert_eq!(first[0], b' ');
        assert_eq!(&first[72..], b"\r\n");
        assert_eq!(out[74], b'!', "each line starts one character later");
        assert!(out
            .iter()
            .all(|b| (b' '..=b'~').contains(b) || *b == b'\r' || *b == b'\n'));
    }
}
