//! Drives the core's SSH client over a real TCP connection (mio, one thread), for tests and
//! benchmarks against OpenSSH's `sshd` and against the harness.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mesh_core::ssh::channel::{ChannelId, ChannelKind, ChannelRequest};
use mesh_core::ssh::client::{ClientConfig, ClientSession};
use mesh_core::ssh::connection::ConnectionEvent;
use mesh_core::ssh::event::SessionEvent;
use mesh_core::time::Instant;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Where a command's stdout goes as it arrives.
pub type OutputSink<'a> = &'a mut dyn FnMut(&[u8]);

/// What a command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
}

/// One client connection.
#[derive(Debug)]
pub struct ClientDriver {
    stream: TcpStream,
    poll: Poll,
    events: Events,
    pub session: ClientSession,
    start: std::time::Instant,
    out: VecDeque<BytesMut>,
    out_offset: usize,
    pending: VecDeque<SessionEvent>,
    closed: bool,
}

const SOCKET: Token = Token(0);

impl ClientDriver {
    /// Connect and run until authenticated (or fail).
    pub fn connect(addr: SocketAddr, config: ClientConfig, seed: u64) -> io::Result<Self> {
        let std_stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        std_stream.set_nodelay(true)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        let poll = Poll::new()?;
        poll.registry().register(&mut stream, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
        let start = std::time::Instant::now();
        let session = ClientSession::new(config, mesh_sim::seeded_rng(seed), Instant::ZERO);
        let mut driver = Self {
            stream,
            poll,
            events: Events::with_capacity(16),
            session,
            start,
            out: VecDeque::new(),
            out_offset: 0,
            pending: VecDeque::new(),
            closed: false,
        };
        let authenticated = driver.wait_for(Duration::from_secs(20), |e| {
            matches!(e, SessionEvent::Authenticated { .. } | SessionEvent::AuthFailed | SessionEvent::Closed(_))
        })?;
        match authenticated {
            SessionEvent::Authenticated { .. } => Ok(driver),
            other => Err(io::Error::other(format!("login failed: {other:?}"))),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    /// Send what is queued, read what arrived (waiting up to `wait`), run timers.
    pub fn turn(&mut self, wait: Duration) -> io::Result<()> {
        self.flush()?;
        let deadline = self.session.poll_timeout().map(|t| t.saturating_duration_since(self.now()));
        let wait = deadline.map_or(wait, |d| d.min(wait));
        self.poll.poll(&mut self.events, Some(wait))?;
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    let now = self.now();
                    self.session.handle_input(now, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.session.poll_timeout().is_some_and(|t| t <= self.now()) {
            let now = self.now();
            self.session.handle_timeout(now);
        }
        while let Some(event) = self.session.poll_event() {
            self.pending.push_back(event);
        }
        self.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some(packet) = self.session.poll_transmit() {
            self.out.push_back(packet);
        }
        while let Some(front) = self.out.front() {
            match self.stream.write(&front[self.out_offset..]) {
                Ok(n) => {
                    self.out_offset += n;
                    if self.out_offset == front.len() {
                        self.out.pop_front();
                        self.out_offset = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Bytes not yet on the socket.
    pub fn queued(&self) -> usize {
        self.session.pending_transmit() + self.out.iter().map(BytesMut::len).sum::<usize>() - self.out_offset
    }

    /// The next event, waiting up to `limit`.
    pub fn next_event(&mut self, limit: Duration) -> io::Result<Option<SessionEvent>> {
        let end = std::time::Instant::now() + limit;
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            if self.closed || std::time::Instant::now() >= end {
                return Ok(None);
            }
            self.turn(Duration::from_millis(50))?;
        }
    }

    /// Events until one matches `pred` (the others are dropped).
    pub fn wait_for(&mut self, limit: Duration, pred: impl Fn(&SessionEvent) -> bool) -> io::Result<SessionEvent> {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Some(e) = self.next_event(Duration::from_millis(100))? {
                if pred(&e) {
                    return Ok(e);
                }
            } else if self.closed {
                break;
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "event did not come"))
    }

    /// Open a session channel and wait for its confirmation.
    pub fn open_session(&mut self) -> io::Result<ChannelId> {
        let id = self
            .session
            .channels(self.now())
            .open(&ChannelKind::Session)
            .ok_or_else(|| io::Error::other("channel limit"))?;
        match self.wait_for(Duration::from_secs(10), |e| {
            matches!(e, SessionEvent::Connection(ConnectionEvent::Opened { channel } | ConnectionEvent::OpenFailed { channel, .. }) if *channel == id)
        })? {
            SessionEvent::Connection(ConnectionEvent::Opened { .. }) => Ok(id),
            other => Err(io::Error::other(format!("open failed: {other:?}"))),
        }
    }

    /// Run `command`, feeding it `input` (then EOF) from `input` and collecting its output;
    /// `sink` gets stdout as it arrives (nothing is kept in `stdout` when given).
    pub fn exec(
        &mut self,
        command: &str,
        input: &mut dyn FnMut(&mut [u8]) -> usize,
        mut sink: Option<OutputSink<'_>>,
    ) -> io::Result<ExecResult> {
        let id = self.open_session()?;
        self.session.channels(self.now()).request(id, &ChannelRequest::Exec(command.as_bytes().to_vec()), true);
        let mut result = ExecResult::default();
        let mut chunk = vec![0u8; 256 * 1024];
        let (mut chunk_len, mut chunk_at) = (0usize, 0usize);
        let mut input_done = false;
        let mut closed = false;
        let end = std::time::Instant::now() + Duration::from_secs(600);
        while !closed {
            if std::time::Instant::now() > end || self.closed {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "command did not finish"));
            }
            // Feed input while the window and the socket queue allow.
            while !input_done && self.queued() < 4 * 1024 * 1024 {
                if chunk_at == chunk_len {
                    chunk_len = input(&mut chunk);
                    chunk_at = 0;
                    if chunk_len == 0 {
                        input_done = true;
                        self.session.channels(self.now()).eof(id);
                        break;
                    }
                }
                let n = self.session.channels(self.now()).write(id, &chunk[chunk_at..chunk_len]);
                if n == 0 {
                    break;
                }
                chunk_at += n;
            }
            self.turn(Duration::from_millis(if self.pending.is_empty() { 20 } else { 0 }))?;
            while let Some(event) = self.pending.pop_front() {
                let SessionEvent::Connection(event) = event else {
                    if let SessionEvent::Closed(error) = event {
                        return Err(io::Error::other(error.to_string()));
                    }
                    continue;
                };
                match event {
                    ConnectionEvent::Data { channel, data } if channel == id => {
                        match sink.as_mut() {
                            Some(sink) => sink(&data),
                            None => result.stdout.extend_from_slice(&data),
                        }
                        self.session.channels(self.now()).consume(id, data.len());
                    }
                    ConnectionEvent::ExtendedData { channel, data, .. } if channel == id => {
                        result.stderr.extend_from_slice(&data);
                        self.session.channels(self.now()).consume(id, data.len());
                    }
                    ConnectionEvent::Request { channel, request, .. } if channel == id => match request {
                        ChannelRequest::ExitStatus(code) => result.exit_status = Some(code),
                        ChannelRequest::ExitSignal { signal, .. } => result.exit_signal = Some(signal),
                        _ => {}
                    },
                    ConnectionEvent::Closed { channel } if channel == id => closed = true,
                    _ => {}
                }
            }
        }
        Ok(result)
    }

    /// Run `command` with no input and collect everything.
    pub fn exec_simple(&mut self, command: &str) -> io::Result<ExecResult> {
        self.exec(command, &mut |_| 0, None)
    }
}
