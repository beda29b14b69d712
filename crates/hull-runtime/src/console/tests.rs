//! Console tests: a pipe stands in for QEMU's stdout, a closure for the host log.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;

use super::*;

/// What the sink received.
#[derive(Debug, Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn sink(&self) -> impl FnMut(Forward<'_>) + Send + 'static {
        let log = self.0.clone();
        move |f| {
            let entry = match f {
                Forward::Line(l) => l.to_string(),
                Forward::Dropped(k) => format!("<dropped {k}>"),
            };
            log.lock().expect("log").push(entry);
        }
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().expect("log").clone()
    }
}

/// A console reading a fresh pipe; returns it with the pipe's write end.
fn console(dir: &Path, bound: usize, log: &Log) -> (Console, File) {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
    let c =
        Console::start_with(r, "t1", dir.join("console.log"), bound, log.sink()).expect("start");
    (c, File::from(w))
}

fn disk_total(c: &Console) -> u64 {
    [c.file().to_path_buf(), older(c.file())]
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

fn disk_bytes(c: &Console) -> Vec<u8> {
    let mut all = std::fs::read(older(c.file())).unwrap_or_default();
    all.extend(std::fs::read(c.file()).expect("console file"));
    all
}

#[test]
fn flood_stays_bounded_and_the_reader_keeps_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::default();
    let bound = 256 * 1024;
    let (c, mut w) = console(dir.path(), bound, &log);
    let t0 = Instant::now();
    let total: usize = 50 << 20;
    let mut batch = Vec::with_capacity(CHUNK + 64);
    let (mut written, mut lines, mut n, mut batches) = (0usize, 0u64, 0u64, 0u64);
    let mut max_disk = 0u64;
    let mut max_memory = (0usize, 0usize);
    let mut last_lines = Vec::new();
    while written < total {
        batch.clear();
        while batch.len() < CHUNK {
            writeln!(
                batch,
                "flood line {n:08} the guest writes as fast as it can"
            )
            .expect("fmt");
            n += 1;
        }
        w.write_all(&batch).expect("write");
        written += batch.len();
        lines += batch.iter().filter(|&&b| b == b'\n').count() as u64;
        batches += 1;
        if batches % 16 == 0 {
            max_disk = max_disk.max(disk_total(&c));
            let m = c.memory();
            max_memory = (max_memory.0.max(m.0), max_memory.1.max(m.1));
        }
        if written >= total {
            last_lines = batch.split(|&b| b == b'\n').map(|l| l.to_vec()).collect();
        }
    }
    w.write_all(b"partial last line, no newline")
        .expect("write");
    drop(w);
    assert!(c.wait_closed(Duration::from_secs(60)), "no EOF seen");
    let took = t0.elapsed();

    let m = c.memory();
    max_memory = (max_memory.0.max(m.0), max_memory.1.max(m.1));
    assert!(max_memory.0 <= bound, "ring held {} bytes", max_memory.0);
    assert!(
        max_memory.1 <= bound + CHUNK,
        "ring allocated {} bytes",
        max_memory.1
    );
    max_disk = max_disk.max(disk_total(&c));
    assert!(max_disk <= bound as u64, "{max_disk} bytes on disk");
    // The two files are exactly the end of the stream.
    let on_disk = disk_bytes(&c);
    assert!(
        on_disk.len() > bound / 2,
        "only {} bytes on disk",
        on_disk.len()
    );
    let mut stream_end = batch[batch.len() - 4096..].to_vec();
    stream_end.extend_from_slice(b"partial last line, no newline");
    assert!(on_disk.ends_with(&stream_end));

    let want = format!(
        "{} | partial last line, no newline",
        String::from_utf8_lossy(&last_lines[last_lines.len() - 2])
    );
    assert_eq!(c.tail(2), want);

    let s = c.stats();
    assert_eq!(s.bytes, written as u64 + 29);
    assert_eq!(s.lines, lines + 1);
    assert_eq!(s.forwarded + s.dropped, s.lines);
    let allowed = u64::from(BURST) + (took.as_secs_f64() * f64::from(RATE_PER_SEC)) as u64 + 1;
    assert!(
        s.forwarded <= allowed,
        "{} forwarded in {took:?}",
        s.forwarded
    );
    assert!(s.dropped >= lines - allowed, "{} dropped", s.dropped);
    let entries = log.entries();
    let summaries: u64 = entries
        .iter()
        .filter_map(|e| {
            e.strip_prefix("<dropped ")?
                .strip_suffix('>')?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(summaries, s.dropped, "every dropped line is in a summary");
    let summary_count = entries.iter().filter(|e| e.starts_with("<dropped")).count() as u64;
    assert!(
        summary_count <= took.as_secs() + 2,
        "{summary_count} summaries in {took:?}"
    );
    assert_eq!(
        entries[0],
        "flood line 00000000 the guest writes as fast as it can"
    );
    eprintln!(
        "50 MiB flood read in {took:?}; max disk {max_disk}, max ring {max_memory:?}, \
         forwarded {}, dropped {}",
        s.forwarded, s.dropped
    );
    assert!(took < Duration::from_secs(30), "reader too slow: {took:?}");
}

#[test]
fn files_rotate_at_half_the_bound_and_hold_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::default();
    let (c, mut w) = console(dir.path(), MIN_BOUND, &log);
    let stream: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    for piece in stream.chunks(777) {
        w.write_all(piece).expect("write");
    }
    drop(w);
    assert!(c.wait_closed(Duration::from_secs(10)));
    let old = std::fs::read(older(c.file())).expect("file.1");
    let new = std::fs::read(c.file()).expect("file");
    assert_eq!(old.len(), MIN_BOUND / 2);
    assert!(new.len() <= MIN_BOUND / 2);
    let on_disk = disk_bytes(&c);
    assert!(stream.ends_with(&on_disk));
    assert_eq!(c.memory().0, MIN_BOUND);
}

#[test]
fn a_stale_older_file_is_removed_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("console.log.1"), "from before").expect("write");
    std::fs::write(dir.path().join("console.log"), "from before").expect("write");
    let (c, w) = console(dir.path(), MIN_BOUND, &Log::default());
    drop(w);
    assert!(c.wait_closed(Duration::from_secs(10)));
    assert!(!older(c.file()).exists());
    assert_eq!(std::fs::read(c.file()).expect("file").len(), 0);
    assert_eq!(c.tail(5), "(empty)");
}

#[test]
fn lines_split_across_reads_and_a_partial_last_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::default();
    let (c, mut w) = console(dir.path(), MIN_BOUND, &log);
    for piece in ["fir", "st\r\nsec", "ond\n\n   \nthi", "rd"] {
        w.write_all(piece.as_bytes()).expect("write");
        w.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!c.wait_closed(Duration::from_millis(50)), "closed early");
    assert_eq!(c.tail(5), "first | second | third");
    drop(w);
    assert!(c.wait_closed(Duration::from_secs(10)));
    assert_eq!(log.entries(), ["first", "second", "third"]);
    assert_eq!(c.stats().lines, 3);
    assert_eq!(c.tail(2), "second | third");
}

#[test]
fn a_huge_line_is_cut_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::default();
    let bound = 16 * 1024;
    let (c, mut w) = console(dir.path(), bound, &log);
    let chunk = vec![b'x'; CHUNK];
    for _ in 0..160 {
        w.write_all(&chunk).expect("write");
    }
    w.write_all(b"\nafter\n").expect("write");
    drop(w);
    assert!(c.wait_closed(Duration::from_secs(30)));
    let entries = log.entries();
    assert_eq!(
        entries.len(),
        2,
        "{:?}",
        entries.iter().map(String::len).collect::<Vec<_>>()
    );
    assert_eq!(entries[0], format!("{}{TRUNCATED}", "x".repeat(LINE_MAX)));
    assert_eq!(entries[1], "after");
    assert_eq!(
        c.tail(2),
        format!("{}{TRUNCATED} | after", "x".repeat(LINE_MAX))
    );
    assert!(c.memory().1 <= bound + CHUNK);
}

#[test]
fn escapes_and_invalid_utf8_are_made_harmless() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::default();
    let (c, mut w) = console(dir.path(), MIN_BOUND, &log);
    w.write_all(b"\x1b]0;owned\x07\x1b[2Jclear\ttab\n")
        .expect("write");
    w.write_all(b"bad \xff\xfe utf8 \xe2\x82 cut\n")
        .expect("write");
    w.write_all("rtl \u{202e}txt.exe\n".as_bytes())
        .expect("write");
    w.write_all(b"carriage\rreturn\x00nul\n").expect("write");
    drop(w);
    assert!(c.wait_closed(Duration::from_secs(10)));
    let want = [
        "\\u{1b}]0;owned\\u{7}\\u{1b}[2Jclear tab",
        "bad \u{fffd}\u{fffd} utf8 \u{fffd} cut",
        "rtl \\u{202e}txt.exe",
        "carriage\\rreturn\\u{0}nul",
    ];
    assert_eq!(log.entries(), want);
    assert_eq!(c.tail(4), want.join(" | "));
    for e in log.entries() {
        assert!(!e.chars().any(|ch| ch.is_control()), "{e:?}");
    }
}

#[test]
fn sanitize_cuts_long_lines_even_after_escaping() {
    let escaped = sanitize(&[0x1b; 4 * LINE_MAX]);
    assert!(escaped.ends_with(TRUNCATED));
    assert!(
        escaped.len() <= LINE_MAX + 16 + TRUNCATED.len(),
        "{}",
        escaped.len()
    );
    let exact = sanitize(&[b'y'; LINE_MAX]);
    assert_eq!(exact.len(), LINE_MAX);
    assert_eq!(sanitize(b"ends with cr\r"), "ends with cr");
}

#[test]
fn rate_limit_bursts_then_counts_and_summarizes_once_per_interval() {
    let t = Instant::now();
    let ms = |n: u64| t + Duration::from_millis(n);
    let mut r = RateLimit::new(2, 3, Duration::from_secs(1), t);
    assert!((0..3).all(|_| r.admit(t)), "the burst passes");
    assert!(!r.admit(t));
    assert!(!r.admit(ms(100)));
    assert_eq!(r.summary_due_in(ms(100)), Some(Duration::from_millis(900)));
    assert_eq!(r.take_summary(ms(500)), None, "not before the interval");
    assert!(r.admit(ms(500)), "one token back after half a second");
    assert!(!r.admit(ms(600)));
    assert_eq!(r.take_summary(ms(1000)), Some(3));
    assert_eq!(r.take_summary(ms(1001)), None);
    assert_eq!(r.summary_due_in(ms(1001)), None);
    // A long pause refills only up to the burst.
    assert!((0..3).all(|_| r.admit(ms(60_000))));
    assert!(!r.admit(ms(60_000)));
    assert_eq!(r.flush(), Some(1));
    assert_eq!(r.flush(), None);
}

#[test]
fn a_summary_comes_without_more_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::default();
    let (c, mut w) = console(dir.path(), MIN_BOUND, &log);
    let burst: String = (0..BURST + 7).map(|i| format!("l{i}\n")).collect();
    w.write_all(burst.as_bytes()).expect("write");
    // No more input and the writer still open: the poll timeout delivers the summary.
    let deadline = Instant::now() + SUMMARY_EVERY * 5;
    while !log.entries().iter().any(|e| e.starts_with("<dropped")) {
        assert!(Instant::now() < deadline, "no summary");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = c.stats();
    assert_eq!(s.lines, u64::from(BURST) + 7);
    assert!(s.dropped >= 1 && s.dropped <= 7, "{s:?}");
    assert_eq!(
        log.entries().last().map(String::as_str),
        Some(format!("<dropped {}>", s.dropped).as_str())
    );
    drop(w);
    assert!(c.wait_closed(Duration::from_secs(10)));
}

#[test]
fn drop_with_the_writer_still_open_does_not_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (c, mut w) = console(dir.path(), MIN_BOUND, &Log::default());
    w.write_all(b"still running\n").expect("write");
    assert!(!c.wait_closed(Duration::from_millis(100)));
    let t0 = Instant::now();
    drop(c);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        t0.elapsed()
    );
    // The reader is gone: the writer now sees a broken pipe (Rust ignores SIGPIPE), not a
    // full pipe.
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&w),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    )
    .expect("nonblocking");
    let err = loop {
        if let Err(e) = w.write_all(&[b'z'; 4096]) {
            break e;
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
}

#[test]
fn wait_closed_reports_eof() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (c, w) = console(dir.path(), MIN_BOUND, &Log::default());
    let t0 = Instant::now();
    assert!(!c.wait_closed(Duration::from_millis(200)));
    assert!(t0.elapsed() >= Duration::from_millis(200));
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(w);
    });
    assert!(c.wait_closed(Duration::from_secs(10)));
    assert!(c.wait_closed(Duration::ZERO), "stays closed");
    closer.join().expect("closer");
}
