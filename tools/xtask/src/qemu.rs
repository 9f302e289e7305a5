//! Running QEMU: assembling its command line, watching the guest's serial
//! output (with an optional timeout), and turning QEMU's exit into the
//! guest's status.
//!
//! The serial console is QEMU's stdout (`-serial stdio`). xtask reads it
//! through a pipe so it can see the kernel's `portcullis: exit <g>` line: that
//! line tells an x86 guest that exited with 0 (QEMU status 1, from
//! isa-debug-exit) apart from QEMU failing on its own (also 1, but no line).

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use wait_timeout::ChildExt;

use crate::console;
use crate::error::{Error, Result};
use crate::machines::{COMMON_ARGS, GuestExit, Machine};
use crate::parse;

/// How many trailing serial lines a failed system test shows.
pub const TAIL_LINES: usize = 20;

/// The full argument list (after the program name) for one QEMU run.
pub fn arguments(
    machine: &Machine,
    configuration: &[impl AsRef<str>],
    kernel: &Path,
    cmdline: &str,
    extra: &[String],
) -> Vec<String> {
    let owned = |args: &[&str]| args.iter().map(|arg| arg.to_string()).collect::<Vec<_>>();
    let mut args = owned(COMMON_ARGS);
    args.extend(owned(machine.machine_args));
    args.extend(configuration.iter().map(|arg| arg.as_ref().to_string()));
    args.extend(owned(machine.device_args));
    args.extend(["-kernel".to_string(), kernel.display().to_string()]);
    args.extend(["-append".to_string(), cmdline.to_string()]);
    args.extend(["-serial".to_string(), "stdio".to_string()]);
    args.extend(extra.iter().cloned());
    args
}

/// How a QEMU run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// QEMU exited by itself, with this status (`None`: killed by a signal).
    Exited(Option<i32>),
    /// The timeout passed and xtask stopped QEMU.
    TimedOut(Duration),
    /// The caller asked xtask to stop QEMU ([`run_until`]).
    Stopped,
}

/// What a QEMU run left behind.
#[derive(Debug)]
pub struct Run {
    /// How it ended.
    pub ended: Ended,
    /// The status from the guest's `portcullis: exit <g>` line, if it printed one.
    pub announced: Option<u32>,
    /// Whether the guest printed anything at all on the serial console.
    pub printed: bool,
    /// The last [`TAIL_LINES`] serial lines, each raw line followed by its
    /// decoding (`console::decode`, marked with `console::DECODED`).
    pub tail: VecDeque<String>,
    /// The last line QEMU wrote to its stderr, if any.
    pub stderr_last: Option<String>,
}

/// Whether QEMU's output is shown as it comes or only handed to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Interactive: serial bytes go straight to our stdout, QEMU's stderr to
    /// ours, and stdin is QEMU's (so the serial console takes input).
    Terminal,
    /// Captured: no stdin; serial lines go only to the `on_line` callback.
    Quiet,
}

/// Messages from the reader and waiter threads to the watching thread.
enum Event {
    Serial(Vec<u8>),
    SerialClosed,
    /// QEMU ended by itself (its status; `None` when killed by a signal or
    /// when waiting for it failed).
    Exited(Option<i32>),
    /// This timeout passed; QEMU has been killed and reaped.
    TimedOut(Duration),
    /// The stop flag was raised; QEMU has been killed and reaped.
    Stopped,
}

/// Runs `qemu` with `args`, calling `on_line` for each serial line, until
/// QEMU exits or `timeout` passes. QEMU runs in the workspace root, so a
/// relative path in a configuration's arguments (a disk image of the
/// repository) means the same wherever xtask was started.
///
/// Three threads serve this one: the serial reader, the stderr reader, and
/// a waiter that owns the child and waits for it (with `wait-timeout` when
/// there is a timeout, killing it when the time is up). Serial bytes and the
/// waiter's verdict meet in one channel, so what the guest printed before
/// the timeout is still seen, and `on_line` runs here (it need not be
/// `Send`).
pub fn run(
    qemu: &str,
    args: &[String],
    echo: Echo,
    timeout: Option<Duration>,
    on_line: impl FnMut(&str),
) -> Result<Run> {
    run_until(qemu, args, echo, timeout, None, on_line)
}

/// [`run`], and QEMU is also stopped (killed and reaped, [`Ended::Stopped`])
/// soon after `stop` is raised: within [`STOP_POLL`].
pub fn run_until(
    qemu: &str,
    args: &[String],
    echo: Echo,
    timeout: Option<Duration>,
    stop: Option<Arc<AtomicBool>>,
    mut on_line: impl FnMut(&str),
) -> Result<Run> {
    let mut command = Command::new(qemu);
    command
        .args(args)
        .current_dir(crate::workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.stdin(match echo {
        Echo::Terminal => Stdio::inherit(),
        Echo::Quiet => Stdio::null(),
    });
    let mut child = command.spawn().map_err(|error| {
        Error::new(
            format!("cannot start {qemu}: {error}"),
            "install QEMU 10.0 or newer (cargo xtask run/test installs it on Debian 12 when run as root)",
        )
    })?;

    let (sender, events) = mpsc::channel();
    let stdout = child.stdout.take();
    let serial_sender = sender.clone();
    let serial = thread::spawn(move || {
        if let Some(mut stdout) = stdout {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buffer) {
                if serial_sender
                    .send(Event::Serial(buffer[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
        let _ = serial_sender.send(Event::SerialClosed);
    });
    let stderr = child.stderr.take();
    let stderr_last = Arc::new(Mutex::new(None));
    let last = Arc::clone(&stderr_last);
    let errors = thread::spawn(move || {
        if let Some(stderr) = stderr {
            for line in BufReader::new(stderr).lines().map_while(|line| line.ok()) {
                if echo == Echo::Terminal {
                    eprintln!("{line}");
                }
                if !line.trim().is_empty() {
                    *last.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(line);
                }
            }
        }
    });
    thread::spawn(move || {
        let _ = sender.send(wait(&mut child, timeout, stop));
    });

    let mut lines = LineSplitter::default();
    let mut watcher = Watcher::default();
    let mut handle = |text: &str, watcher: &mut Watcher| {
        watcher.see(text);
        on_line(text);
    };
    let mut serial_closed = false;
    let mut exited = None;
    let ended = loop {
        // Every sender sends its last event before it goes, so a closed
        // channel means a reader or the waiter panicked: treat it as the end.
        let event = events.recv().unwrap_or(Event::Exited(None));
        match event {
            Event::Serial(bytes) => {
                // Line by line, so a raw line's decoding (console.rs) follows
                // it on the terminal; a partial line is echoed at once.
                for piece in bytes.split_inclusive(|&byte| byte == b'\n') {
                    let completed = lines.push(piece);
                    if echo == Echo::Terminal {
                        let mut stdout = io::stdout().lock();
                        let _ = stdout.write_all(piece);
                        for line in &completed {
                            for decoded in console::decode(line) {
                                let _ = writeln!(stdout, "{}{decoded}", console::DECODED);
                            }
                        }
                        let _ = stdout.flush();
                    }
                    for line in completed {
                        handle(&line, &mut watcher);
                    }
                }
            }
            Event::SerialClosed => serial_closed = true,
            Event::Exited(code) => exited = Some(Ended::Exited(code)),
            Event::TimedOut(timeout) => break Ended::TimedOut(timeout),
            Event::Stopped => break Ended::Stopped,
        }
        if let (true, Some(ended)) = (serial_closed, exited) {
            break ended;
        }
    };
    if let Some(line) = lines.finish() {
        handle(&line, &mut watcher);
    }

    // After a timeout a grandchild may still hold the pipes open: do not
    // wait for the readers then, they end with the pipes.
    if !matches!(ended, Ended::TimedOut(_) | Ended::Stopped) {
        let _ = serial.join();
        let _ = errors.join();
    }
    let stderr_last = stderr_last
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    Ok(Run {
        ended,
        announced: watcher.announced,
        printed: watcher.printed,
        tail: watcher.tail,
        stderr_last,
    })
}

/// How often the waiter looks at a stop flag.
pub const STOP_POLL: Duration = Duration::from_millis(100);

/// Waits for QEMU, at most `timeout` and until `stop` is raised: past
/// either QEMU is killed and reaped.
fn wait(child: &mut Child, timeout: Option<Duration>, stop: Option<Arc<AtomicBool>>) -> Event {
    let Some(stop) = stop else {
        let status = match timeout {
            None => child.wait(),
            Some(timeout) => match child.wait_timeout(timeout) {
                Ok(Some(status)) => Ok(status),
                Ok(None) => return kill(child, Event::TimedOut(timeout)),
                Err(error) => Err(error),
            },
        };
        return Event::Exited(status.ok().and_then(|status| status.code()));
    };
    let start = std::time::Instant::now();
    loop {
        if stop.load(Ordering::Acquire) {
            return kill(child, Event::Stopped);
        }
        let slice = match timeout {
            Some(timeout) => match timeout.checked_sub(start.elapsed()) {
                Some(left) => left.min(STOP_POLL),
                None => return kill(child, Event::TimedOut(timeout)),
            },
            None => STOP_POLL,
        };
        match child.wait_timeout(slice) {
            Ok(Some(status)) => return Event::Exited(status.code()),
            Ok(None) => {}
            Err(_) => return Event::Exited(None),
        }
    }
}

/// Kills and reaps QEMU; `event` says why.
fn kill(child: &mut Child, event: Event) -> Event {
    let _ = child.kill();
    let _ = child.wait();
    event
}

/// Keeps what the outcome needs from the serial lines.
#[derive(Default)]
struct Watcher {
    announced: Option<u32>,
    printed: bool,
    tail: VecDeque<String>,
}

impl Watcher {
    fn see(&mut self, line: &str) {
        self.printed = true;
        if let Some(status) = parse::exit_line(line) {
            self.announced = Some(status);
        }
        let decoded = console::decode(line)
            .into_iter()
            .map(|decoded| format!("{}{decoded}", console::DECODED));
        for line in std::iter::once(line.to_string()).chain(decoded) {
            if self.tail.len() == TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(line);
        }
    }
}

/// Cuts a byte stream into lines (without `\r\n`), decoding lossily: a guest
/// may print anything.
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes; returns the lines they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                lines.push(Self::decode(&self.partial));
                self.partial.clear();
            } else {
                self.partial.push(byte);
            }
        }
        lines
    }

    /// The unterminated last line, if any.
    pub fn finish(&mut self) -> Option<String> {
        let line = (!self.partial.is_empty()).then(|| Self::decode(&self.partial));
        self.partial.clear();
        line
    }

    fn decode(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes)
            .trim_end_matches('\r')
            .to_string()
    }
}

/// The guest's exit status, or why there is none.
///
/// A guest status needs both the `portcullis: exit <g>` line and the QEMU
/// status that encodes `g`: the line alone could be followed by a hang, and
/// the QEMU status alone cannot tell a guest `exit 0` on Arm from QEMU
/// exiting cleanly for another reason.
pub fn guest_status(exit: GuestExit, run: &Run) -> std::result::Result<u32, String> {
    match (run.ended, run.announced) {
        (Ended::Exited(Some(code)), Some(guest)) if code == exit.qemu_status(guest) => Ok(guest),
        (Ended::Exited(code), Some(guest)) => Err(format!(
            "the guest printed `portcullis: exit {guest}` but QEMU exited with {}, not {}",
            describe(code),
            exit.qemu_status(guest)
        )),
        (Ended::TimedOut(timeout), Some(guest)) => Err(format!(
            "the guest printed `portcullis: exit {guest}` but QEMU had not stopped after {} s",
            timeout.as_secs()
        )),
        (Ended::TimedOut(timeout), None) => Err(format!(
            "timed out after {} s without `portcullis: exit`",
            timeout.as_secs()
        )),
        (Ended::Stopped, _) => Err("xtask stopped QEMU before the guest exited".to_string()),
        (Ended::Exited(code), None) => {
            let stderr = run
                .stderr_last
                .as_deref()
                .map(|line| format!(": {line}"))
                .unwrap_or_default();
            if run.printed {
                Err(format!(
                    "QEMU exited with {} before the guest printed `portcullis: exit`{stderr}",
                    describe(code)
                ))
            } else {
                Err(format!(
                    "QEMU failed to start (exit status {}){stderr}",
                    describe(code)
                ))
            }
        }
    }
}

fn describe(code: Option<i32>) -> String {
    code.map_or_else(|| "a signal".to_string(), |code| code.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machines::{AARCH64_VIRT, X86_64_Q35};
    use std::time::Instant;

    fn finished(ended: Ended, announced: Option<u32>, printed: bool, stderr: Option<&str>) -> Run {
        Run {
            ended,
            announced,
            printed,
            tail: VecDeque::new(),
            stderr_last: stderr.map(str::to_string),
        }
    }

    #[test]
    fn arguments_put_the_iommu_before_the_devices() {
        let args = arguments(
            &X86_64_Q35,
            &["-device", "intel-iommu"],
            Path::new("/k"),
            "image=default",
            &["-d".to_string(), "int".to_string()],
        );
        let joined = args.join(" ");
        assert!(joined.starts_with("-accel tcg -display none -no-reboot -m 512M -M q35 -cpu qemu64 -device intel-iommu -device isa-debug-exit"), "{joined}");
        assert!(
            joined.ends_with("-kernel /k -append image=default -serial stdio -d int"),
            "{joined}"
        );
        // The command line stays one argument.
        let append = args.iter().position(|arg| arg == "-append").unwrap();
        assert_eq!(args[append + 1], "image=default");
    }

    #[test]
    fn arm_arguments() {
        let args = arguments(
            &AARCH64_VIRT,
            &[""; 0],
            Path::new("/k"),
            "tests=boot a=1",
            &[],
        )
        .join(" ");
        assert!(
            args.contains("-M virt,iommu=smmuv3 -cpu max -semihosting -device edu"),
            "{args}"
        );
        assert!(
            args.ends_with("-kernel /k -append tests=boot a=1 -serial stdio"),
            "{args}"
        );
    }

    #[test]
    fn guest_status_from_x86_debug_exit() {
        let exit = GuestExit::IsaDebugExit;
        assert_eq!(
            guest_status(exit, &finished(Ended::Exited(Some(1)), Some(0), true, None)),
            Ok(0)
        );
        assert_eq!(
            guest_status(exit, &finished(Ended::Exited(Some(3)), Some(1), true, None)),
            Ok(1)
        );
        // QEMU's own failure is also status 1, but there is no exit line.
        let error = guest_status(
            exit,
            &finished(
                Ended::Exited(Some(1)),
                None,
                false,
                Some("qemu-system-x86_64: -device foo: 'foo' is not a valid device model name"),
            ),
        )
        .unwrap_err();
        assert!(error.starts_with("QEMU failed to start"), "{error}");
        assert!(error.contains("not a valid device model name"), "{error}");
        // A mismatch between the line and the status is reported, not guessed.
        assert!(
            guest_status(exit, &finished(Ended::Exited(Some(0)), Some(0), true, None)).is_err()
        );
    }

    #[test]
    fn guest_status_from_semihosting() {
        let exit = GuestExit::Semihosting;
        assert_eq!(
            guest_status(exit, &finished(Ended::Exited(Some(0)), Some(0), true, None)),
            Ok(0)
        );
        assert_eq!(
            guest_status(exit, &finished(Ended::Exited(Some(4)), Some(4), true, None)),
            Ok(4)
        );
        let error =
            guest_status(exit, &finished(Ended::Exited(Some(0)), None, true, None)).unwrap_err();
        assert!(error.contains("before the guest printed"), "{error}");
    }

    #[test]
    fn timeouts() {
        let timeout = Ended::TimedOut(Duration::from_secs(60));
        let error =
            guest_status(GuestExit::Semihosting, &finished(timeout, None, true, None)).unwrap_err();
        assert!(error.contains("timed out after 60 s"), "{error}");
        let error = guest_status(
            GuestExit::Semihosting,
            &finished(timeout, Some(0), true, None),
        )
        .unwrap_err();
        assert!(error.contains("had not stopped"), "{error}");
    }

    #[test]
    fn line_splitter() {
        let mut lines = LineSplitter::default();
        assert_eq!(lines.push(b"test a ... o"), Vec::<String>::new());
        assert_eq!(
            lines.push(b"k\r\nportcullis: exit 0\r\npart"),
            vec!["test a ... ok", "portcullis: exit 0"]
        );
        assert_eq!(lines.push(b"\xff\n"), vec!["part\u{fffd}"]);
        assert_eq!(lines.push(b"end"), Vec::<String>::new());
        assert_eq!(lines.finish(), Some("end".to_string()));
        assert_eq!(lines.finish(), None);
    }

    /// The watcher, the exit line and the timeout, with `sh` standing in for QEMU.
    #[test]
    fn run_stops_a_guest_that_overruns() {
        let script = "echo 'test a ... ok'; echo 'portcullis: exit 0'; sleep 5";
        let args = ["-c".to_string(), script.to_string()];
        let started = Instant::now();
        let mut seen = Vec::new();
        let run = run(
            "sh",
            &args,
            Echo::Quiet,
            Some(Duration::from_millis(500)),
            |line| seen.push(line.to_string()),
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(seen, ["test a ... ok", "portcullis: exit 0"]);
        assert_eq!(run.ended, Ended::TimedOut(Duration::from_millis(500)));
        assert_eq!(run.announced, Some(0));
        assert_eq!(run.tail.len(), 2);
    }

    #[test]
    fn run_reports_the_exit_status_and_stderr() {
        let script = "echo 'portcullis: exit 1'; echo 'warning: something' >&2; exit 3";
        let args = ["-c".to_string(), script.to_string()];
        let run = run(
            "sh",
            &args,
            Echo::Quiet,
            Some(Duration::from_secs(20)),
            |_| {},
        )
        .unwrap();
        assert_eq!(run.ended, Ended::Exited(Some(3)));
        assert_eq!(run.stderr_last.as_deref(), Some("warning: something"));
        assert_eq!(guest_status(GuestExit::IsaDebugExit, &run), Ok(1));
    }

    /// A raised stop flag ends a run that would go on, well before its
    /// timeout.
    #[test]
    fn run_until_stops_when_asked() {
        let args = ["-c".to_string(), "echo ready; sleep 30".to_string()];
        let stop = Arc::new(AtomicBool::new(false));
        let raise = Arc::clone(&stop);
        let started = Instant::now();
        let run = run_until(
            "sh",
            &args,
            Echo::Quiet,
            Some(Duration::from_secs(60)),
            Some(stop),
            move |line| {
                if line == "ready" {
                    raise.store(true, Ordering::Release);
                }
            },
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(run.ended, Ended::Stopped);
        assert!(guest_status(GuestExit::Semihosting, &run).is_err());
    }

    #[test]
    fn a_missing_emulator_is_an_error() {
        let error = run("/nonexistent/qemu", &[], Echo::Quiet, None, |_| {}).unwrap_err();
        assert!(
            error.problem.contains("cannot start /nonexistent/qemu"),
            "{error}"
        );
    }
}
