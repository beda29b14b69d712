//! The guest serial console, read from QEMU's stdout pipe into a bounded in-memory ring, a
//! bounded pair of files in the run dir and rate-limited, sanitized lines in the host log.
//!
//! The guest is untrusted and can write to its serial port as fast as it likes, so nothing
//! here grows with what it writes: memory is the ring (`bound` bytes) plus one read chunk and
//! one line; disk is `file` and `file.1`, each at most `bound / 2`; the host log gets at most
//! [`RATE_PER_SEC`] lines a second (after a burst of [`BURST`]), each at most [`LINE_MAX`]
//! bytes with control characters escaped, and one "dropped K lines" summary per
//! [`SUMMARY_EVERY`] for the rest. When the reader cannot keep up, the pipe fills and QEMU
//! stops taking bytes from the guest's UART: a flood slows the flooding guest, nobody else.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Bytes read from the console in one go (the size of a default pipe buffer).
pub(crate) const CHUNK: usize = 64 * 1024;
/// Longest line forwarded to the log or shown in a tail; longer lines are cut and marked.
pub(crate) const LINE_MAX: usize = 1024;
/// Smallest ring accepted (the config allows 4 KiB and up).
pub(crate) const MIN_BOUND: usize = 4096;
/// Lines per second forwarded to the host log once the burst is used up.
pub(crate) const RATE_PER_SEC: u32 = 50;
/// Lines forwarded at once before the rate applies (a whole boot log fits).
pub(crate) const BURST: u32 = 200;
/// At most one "dropped K lines" summary per this interval.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(1);
/// Marker appended to a line cut at [`LINE_MAX`].
const TRUNCATED: &str = " [truncated]";

/// What the reader hands to the log: a sanitized line, or how many lines were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forward<'a> {
    /// One console line, sanitized and at most [`LINE_MAX`] bytes plus a marker.
    Line(&'a str),
    /// This many lines were not forwarded since the last summary.
    Dropped(u64),
}

/// Counters of one console, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Bytes read from the guest.
    pub bytes: u64,
    /// Non-blank lines seen (a last line without a newline counts at EOF).
    pub lines: u64,
    /// Lines forwarded to the log.
    pub forwarded: u64,
    /// Lines the rate limit dropped.
    pub dropped: u64,
}

/// The guest console of one sandbox, read by a thread of its own until the writer (QEMU) exits.
///
/// Dropping it stops the reader and joins it, which never waits on the guest: the thread
/// sleeps in `poll` on the console and on a wake-up socket that `drop` closes, and never
/// blocks in `read` (it reads only what `poll` reported). A QEMU still running then gets
/// EPIPE on its console writes, which it ignores.
pub(crate) struct Console {
    id: String,
    file: PathBuf,
    bound: usize,
    shared: Arc<Shared>,
    wake: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the ring: it is the guest's bytes, and up to `bound` of them.
        f.debug_struct("Console")
            .field("id", &self.id)
            .field("file", &self.file)
            .field("bound", &self.bound)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    closed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The last `bound` bytes of the console.
    ring: VecDeque<u8>,
    /// The reader has seen EOF (or stopped) and closed the file.
    closed: bool,
    stats: Stats,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Console {
    /// Start reading `source` (the read end of QEMU's stdout) on a thread named after the
    /// sandbox. The last `bound` bytes (at least [`MIN_BOUND`]) are kept in memory, and
    /// copied to `file`, which is renamed to `file.1` (replacing it) whenever it reaches
    /// `bound / 2`, so both together never hold more than `bound` bytes.
    pub(crate) fn start(
        source: OwnedFd,
        sandbox_id: &str,
        file: PathBuf,
        bound: usize,
    ) -> std::io::Result<Console> {
        let id = sandbox_id.to_string();
        Self::start_with(source, sandbox_id, file, bound, move |f: Forward<'_>| {
            log_forward(&id, f)
        })
    }

    /// Like [`Console::start`], with the log replaced by `sink` (for tests).
    pub(crate) fn start_with(
        source: OwnedFd,
        sandbox_id: &str,
        file: PathBuf,
        bound: usize,
        sink: impl FnMut(Forward<'_>) + Send + 'static,
    ) -> std::io::Result<Console> {
        let bound = bound.max(MIN_BOUND);
        let disk = DiskLog::create(&file, bound)?;
        let (wake, wake_peer) = UnixStream::pair()?;
        let shared = Arc::new(Shared::default());
        shared.lock().ring = VecDeque::with_capacity(bound);
        let reader = Reader {
            source: File::from(source),
            wake: wake_peer,
            shared: shared.clone(),
            bound,
            disk,
            lines: LineSplitter::default(),
            limiter: RateLimit::new(RATE_PER_SEC, BURST, SUMMARY_EVERY, Instant::now()),
            sink,
            id: sandbox_id.to_string(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("console-{sandbox_id}"))
            .spawn(move || reader.run())?;
        Ok(Console {
            id: sandbox_id.to_string(),
            file,
            bound,
            shared,
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// The last `n` non-empty lines, sanitized like the log's, joined with " | " (the format
    /// of [`crate::tail_lines`]); "(empty)" when there are none.
    pub fn tail(&self, n: usize) -> String {
        let mut state = self.shared.lock();
        let bytes: &[u8] = state.ring.make_contiguous();
        let mut picked: Vec<String> = Vec::new();
        for raw in bytes.rsplit(|&b| b == b'\n') {
            if picked.len() >= n {
                break;
            }
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line = sanitize(raw);
            if !line.trim().is_empty() {
                picked.push(line);
            }
        }
        drop(state);
        picked.reverse();
        let tail = crate::tail_lines(&picked.join("\n"), n);
        if tail.is_empty() {
            "(empty)".into()
        } else {
            tail
        }
    }

    /// Wait up to `timeout` for the end of the console (QEMU exited and everything it wrote
    /// was read and saved); whether it has ended.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let guard = self.shared.lock();
        let (guard, _) = self
            .shared
            .closed
            .wait_timeout_while(guard, timeout, |s| !s.closed)
            .unwrap_or_else(|p| p.into_inner());
        guard.closed
    }

    /// The console file (the older half is this path with ".1" appended).
    #[cfg(test)]
    fn file(&self) -> &Path {
        &self.file
    }

    /// Counters so far.
    pub(crate) fn stats(&self) -> Stats {
        self.shared.lock().stats
    }

    /// Bytes held in memory for the tail, and the ring's allocated capacity.
    #[cfg(test)]
    fn memory(&self) -> (usize, usize) {
        let s = self.shared.lock();
        (s.ring.len(), s.ring.capacity())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // Closing our end of the wake-up pair makes the reader's poll return at once.
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(sandbox = %self.id, "console reader panicked");
            }
        }
    }
}

/// Send one forwarded item to `tracing`, target "guest_console".
fn log_forward(id: &str, f: Forward<'_>) {
    match f {
        Forward::Line(line) => {
            tracing::info!(target: "guest_console", sandbox = %id, line = %line, "console")
        }
        Forward::Dropped(k) => tracing::warn!(
            target: "guest_console",
            sandbox = %id,
            dropped = k,
            "console: dropped {k} lines (rate limit)"
        ),
    }
}

/// The `file.1` beside `file`.
pub(crate) fn older(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// The reading thread's state.
struct Reader<S> {
    source: File,
    wake: UnixStream,
    shared: Arc<Shared>,
    bound: usize,
    disk: DiskLog,
    lines: LineSplitter,
    limiter: RateLimit,
    sink: S,
    id: String,
}

impl<S: FnMut(Forward<'_>)> Reader<S> {
    fn run(mut self) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let timeout = match self.limiter.summary_due_in(Instant::now()) {
                None => PollTimeout::NONE,
                // Round up so a wake-up never comes before the summary is due.
                Some(d) => {
                    PollTimeout::try_from(d + Duration::from_millis(1)).unwrap_or(PollTimeout::MAX)
                }
            };
            let (data, stop) = {
                let mut fds = [
                    PollFd::new(self.source.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!(sandbox = %self.id, error = %e, "console poll failed; reading stops");
                        break;
                    }
                }
                let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if stop {
                break;
            }
            if !data {
                self.summarize(Instant::now());
                continue;
            }
            match self.source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.consume(&buf[..n], Instant::now()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(sandbox = %self.id, error = %e, "console read failed; reading stops");
                    break;
                }
            }
        }
        self.finish();
    }

    /// Ring, file, then lines, for one chunk read at `now`.
    fn consume(&mut self, data: &[u8], now: Instant) {
        {
            let mut state = self.shared.lock();
            push_bounded(&mut state.ring, self.bound, data);
            state.stats.bytes += data.len() as u64;
        }
        self.disk.write(data);
        let mut counts = Stats::default();
        let (limiter, sink) = (&mut self.limiter, &mut self.sink);
        self.lines.feed(data, |raw| {
            forward_line(raw, now, limiter, sink, &mut counts)
        });
        self.add(counts);
        self.summarize(now);
    }

    fn summarize(&mut self, now: Instant) {
        if let Some(k) = self.limiter.take_summary(now) {
            (self.sink)(Forward::Dropped(k));
        }
    }

    fn add(&self, c: Stats) {
        let mut state = self.shared.lock();
        state.stats.lines += c.lines;
        state.stats.forwarded += c.forwarded;
        state.stats.dropped += c.dropped;
    }

    /// End of the console: the last line without a newline, the pending summary, the file.
    fn finish(mut self) {
        let mut counts = Stats::default();
        if let Some(raw) = self.lines.take_rest() {
            forward_line(
                &raw,
                Instant::now(),
                &mut self.limiter,
                &mut self.sink,
                &mut counts,
            );
        }
        self.add(counts);
        if let Some(k) = self.limiter.flush() {
            (self.sink)(Forward::Dropped(k));
        }
        self.disk.close();
        let mut state = self.shared.lock();
        state.closed = true;
        tracing::debug!(sandbox = %self.id, bytes = state.stats.bytes, lines = state.stats.lines,
            dropped = state.stats.dropped, "console closed");
        drop(state);
        self.shared.closed.notify_all();
    }
}

/// Count one raw line and forward it if the limiter lets it through. Blank lines are ignored.
fn forward_line<S: FnMut(Forward<'_>)>(
    raw: &[u8],
    now: Instant,
    limiter: &mut RateLimit,
    sink: &mut S,
    counts: &mut Stats,
) {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    counts.lines += 1;
    if limiter.admit(now) {
        counts.forwarded += 1;
        sink(Forward::Line(&sanitize(raw)));
    } else {
        counts.dropped += 1;
    }
}

/// Append `data` to `ring`, dropping from the front so it never holds more than `bound` bytes.
fn push_bounded(ring: &mut VecDeque<u8>, bound: usize, data: &[u8]) {
    let data = &data[data.len().saturating_sub(bound)..];
    let excess = (ring.len() + data.len()).saturating_sub(bound);
    ring.drain(..excess);
    ring.extend(data);
}

/// Splits a byte stream into lines, keeping at most [`LINE_MAX`] + 1 bytes of an unfinished one
/// (the extra byte tells that it was longer).
#[derive(Debug, Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Call `each` with every line that `data` completes (without its '\n'; lines longer than
    /// [`LINE_MAX`] cut to `LINE_MAX + 1` bytes).
    fn feed(&mut self, data: &[u8], mut each: impl FnMut(&[u8])) {
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let piece = &rest[..i];
            if self.pending.is_empty() {
                each(&piece[..piece.len().min(LINE_MAX + 1)]);
            } else {
                self.keep(piece);
                each(&self.pending);
                self.pending.clear();
            }
            rest = &rest[i + 1..];
        }
        self.keep(rest);
    }

    fn keep(&mut self, piece: &[u8]) {
        let room = (LINE_MAX + 1).saturating_sub(self.pending.len());
        self.pending
            .extend_from_slice(&piece[..piece.len().min(room)]);
    }

    /// The unfinished last line, if any.
    fn take_rest(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// Make one raw console line safe to log: lossy UTF-8, a trailing '\r' removed, tabs as
/// spaces, control and bidirectional-override characters escaped (a guest must not be able
/// to drive the terminal of whoever reads the log), cut at [`LINE_MAX`] bytes with a marker.
pub(crate) fn sanitize(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let mut truncated = raw.len() > LINE_MAX;
    let text = String::from_utf8_lossy(&raw[..raw.len().min(LINE_MAX)]);
    let mut out = String::with_capacity(text.len().min(LINE_MAX) + TRUNCATED.len());
    for c in text.chars() {
        if out.len() >= LINE_MAX {
            truncated = true;
            break;
        }
        if c == '\t' {
            out.push(' ');
        } else if c.is_control() || is_bidi_control(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if truncated {
        out.push_str(TRUNCATED);
    }
    out
}

/// Unicode characters that reorder the text around them when displayed.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A token bucket over lines: `burst` at once, then `rate` a second; it counts what it
/// refuses and hands the count out at most once per `interval`.
#[derive(Debug)]
pub(crate) struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    interval: Duration,
    /// Refused since the last summary.
    dropped: u64,
    /// When the first of those was refused.
    since: Option<Instant>,
}

impl RateLimit {
    /// A full bucket at `now`.
    pub(crate) fn new(rate: u32, burst: u32, interval: Duration, now: Instant) -> RateLimit {
        RateLimit {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
            interval,
            dropped: 0,
            since: None,
        }
    }

    /// Whether a line arriving at `now` may be forwarded (if not, it is counted as dropped).
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            self.since.get_or_insert(now);
            false
        }
    }

    /// The number dropped, once `interval` has passed since the first of them.
    pub(crate) fn take_summary(&mut self, now: Instant) -> Option<u64> {
        match self.since {
            Some(t) if now.saturating_duration_since(t) >= self.interval => self.flush(),
            _ => None,
        }
    }

    /// The number dropped, whenever there is one (at the end).
    pub(crate) fn flush(&mut self) -> Option<u64> {
        self.since = None;
        (self.dropped > 0).then(|| std::mem::take(&mut self.dropped))
    }

    /// How long until a summary is due, if drops are waiting for one.
    pub(crate) fn summary_due_in(&self, now: Instant) -> Option<Duration> {
        self.since
            .map(|t| (t + self.interval).saturating_duration_since(now))
    }
}

/// The console on disk: `path` and `path.1`, each at most `half` bytes. A write or rename
/// error (say the run directory was removed) turns the file copy off; memory and log go on.
#[derive(Debug)]
struct DiskLog {
    path: PathBuf,
    old: PathBuf,
    file: Option<File>,
    written: usize,
    half: usize,
}

impl DiskLog {
    fn create(path: &Path, bound: usize) -> std::io::Result<DiskLog> {
        let old = older(path);
        match std::fs::remove_file(&old) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = File::create(path)?;
        Ok(DiskLog {
            path: path.to_path_buf(),
            old,
            file: Some(file),
            written: 0,
            half: bound / 2,
        })
    }

    /// Append `data` (one write per file per chunk; a tmpfs write is a memory copy, so the
    /// reader is not held up; on a slow disk the pipe fills and the guest waits, not us).
    fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.written >= self.half {
                self.rotate();
            }
            let Some(file) = self.file.as_mut() else {
                return;
            };
            let n = (self.half - self.written).min(data.len());
            if let Err(e) = file.write_all(&data[..n]) {
                self.fail("write", &e);
                return;
            }
            self.written += n;
            data = &data[n..];
        }
    }

    fn rotate(&mut self) {
        if self.file.take().is_none() {
            return;
        }
        match std::fs::rename(&self.path, &self.old) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return self.fail("rename", &e),
            _ => {}
        }
        match File::create(&self.path) {
            Ok(f) => {
                self.file = Some(f);
                self.written = 0;
            }
            Err(e) => self.fail("create", &e),
        }
    }

    fn fail(&mut self, what: &str, e: &std::io::Error) {
        tracing::warn!(file = %self.path.display(), error = %e, "console file {what} failed; no more console on disk");
        self.file = None;
    }

    fn close(&mut self) {
        self.file = None;
    }
}

#[cfg(test)]
mod tests;
