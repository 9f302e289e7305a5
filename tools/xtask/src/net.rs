//! The network of images that drive a virtio-net device
//! (`images/net.toml`): QEMU's user networking with the guest's services
//! forwarded to the host's loopback, and the host's checks of them.
//!
//! A platform's `virtio-net` device (`images/platforms/*.toml`, model
//! `virtio-net`) names the backend `netdev=net0`; `crate::disk::devices`
//! adds the device only to an image that grants it, and the caller adds
//! [`netdev`]: `-netdev user,id=net0,restrict=on` with two `hostfwd`
//! rules, host `127.0.0.1:HTTP` to guest port 80 and `127.0.0.1:ECHO` to
//! guest port 7. `restrict=on` keeps the guest off the host's network
//! (it reaches nothing but the forwarded connections), and the forwards
//! listen on 127.0.0.1 only.
//!
//! `cargo xtask run --image net --port P` forwards P and P+1 and prints
//! the URL once the guest says it serves ([`SERVING`]). The `*-net` system
//! tests take two free ports ([`free_ports`]), wait for that line, run
//! [`check`] (each connection bounded by [`TIMEOUT`], [`ATTEMPTS`]
//! attempts to connect) and stop QEMU.
//!
//! An image whose driver is restarted and injects a crash
//! (`images/net-restart.toml`, [`restarts`]) gets [`check_restart`]
//! instead: the first request meets the crash (no answer, bounded by
//! [`TIMEOUT`]), then the host retries ([`RETRIES`] times, at most
//! [`RETRY_TIME`]) until the status page answers from run 2, and checks
//! echo again; the console must count one restart ([`RESTART_LINE`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::error::{Error, Result};

/// The platform device model of a virtio-net function.
pub const MODEL: &str = "virtio-net";
/// The host port `cargo xtask run` forwards to the guest's HTTP port by
/// default (the echo port is the next one).
pub const DEFAULT_PORT: u16 = 8080;
/// The guest's HTTP and echo ports (drivers/vnet).
pub const GUEST_HTTP: u16 = 80;
/// See [`GUEST_HTTP`].
pub const GUEST_ECHO: u16 = 7;
/// What the driver prints once its services listen.
pub const SERVING: &str = "[vnet] serving HTTP on";
/// The limit on each connect, read and write.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Connection attempts (one second apart) before a check fails.
pub const ATTEMPTS: u32 = 5;
/// Fetches of the status page after the crash, one second apart, before
/// the restart check fails.
pub const RETRIES: u32 = 20;
/// The longest the host retries after the crash (within the row's QEMU
/// timeout, 60 s by default).
pub const RETRY_TIME: Duration = Duration::from_secs(30);
/// Init's console line for each restart of the driver domain.
pub const RESTART_LINE: &str = "of protection domain \"vnet\" (at most";
/// The most bytes read from one connection.
const READ_LIMIT: u64 = 64 << 10;
/// The echo payload sizes the test sends, one connection each.
pub const ECHO_SIZES: [usize; 6] = [1, 13, 512, 1460, 1500, 4000];

/// The host's loopback ports forwarded to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// To guest port 80.
    pub http: u16,
    /// To guest port 7.
    pub echo: u16,
}

impl Ports {
    /// `http` and the next port.
    pub fn from_http(http: u16) -> Result<Ports> {
        let echo = http.checked_add(1).ok_or_else(|| {
            Error::new(
                format!("--port {http} leaves no port above it for the echo service"),
                "choose a port below 65535",
            )
        })?;
        Ok(Ports { http, echo })
    }
}

/// Whether `image` grants a virtio-net device (and so needs [`netdev`]).
pub fn granted(image: &sysimage::Image) -> bool {
    image.platform.devices.iter().any(|device| {
        device.model == MODEL
            && image
                .system
                .dma_grants
                .iter()
                .any(|grant| grant.device == device.pci)
    })
}

/// Whether `image`'s driver domain injects a crash that init restarts it
/// from (so the host runs [`check_restart`]).
pub fn restarts(image: &sysimage::Image) -> bool {
    image
        .system
        .domains
        .iter()
        .any(|pd| pd.inject != sysimage::sysdesc::Inject::None)
}

/// The QEMU backend the platform's virtio-net names, forwarding `ports`.
pub fn netdev(ports: Ports) -> Vec<String> {
    vec![
        "-netdev".to_string(),
        format!(
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{}-:{GUEST_HTTP},hostfwd=tcp:127.0.0.1:{}-:{GUEST_ECHO}",
            ports.http, ports.echo
        ),
    ]
}

/// Two loopback ports free now (the OS picks them; QEMU binds them a
/// moment later).
pub fn free_ports() -> Result<Ports> {
    let pick = || -> Result<(TcpListener, u16)> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|error| {
            Error::new(
                format!("cannot bind a loopback port: {error}"),
                "check that 127.0.0.1 is up",
            )
        })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        Ok((listener, port))
    };
    // Both held at once, so they differ.
    let (_first, http) = pick()?;
    let (_second, echo) = pick()?;
    Ok(Ports { http, echo })
}

/// One host check's outcome: its test name and a sentence either way.
pub type Check = (&'static str, std::result::Result<String, String>);

/// The host's checks of the guest's services through `ports`, in order:
/// the status page (its content), that it is built per request, a 404,
/// and the echo of every size in [`ECHO_SIZES`].
pub fn check(ports: Ports) -> Vec<Check> {
    let mut checks = Vec::new();
    let first = fetch(ports.http, "/");
    checks.push((
        "host_fetches_the_status_page",
        first.clone().and_then(|page| judge_status(&page, NO_FAULT)),
    ));
    let second = fetch(ports.http, "/");
    checks.push((
        "host_status_page_is_built_per_request",
        first.and_then(|a| second.and_then(|b| judge_fresh(&a, &b))),
    ));
    checks.push((
        "host_gets_404_for_other_paths",
        fetch(ports.http, "/missing").and_then(|page| {
            page.starts_with("HTTP/1.0 404 ")
                .then(|| "GET /missing answered 404".to_string())
                .ok_or_else(|| format!("GET /missing answered {:?}", first_line(&page)))
        }),
    ));
    checks.push(("host_echo_returns_each_payload", echo_all(ports.echo)));
    checks
}

/// The host's checks of a driver that crashes on its first HTTP request
/// and is restarted, in order: the first request gets no status page (the
/// connection ends or times out, bounded by [`TIMEOUT`]); a retry within
/// [`RETRIES`] and [`RETRY_TIME`] gets the status page with every
/// capability live, served by run 2; echo works again.
pub fn check_restart(ports: Ports) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push((
        "host_first_request_meets_the_crash",
        match fetch(ports.http, "/") {
            Ok(page) if page.starts_with("HTTP/1.0 200 ") => Err(format!(
                "the first request was answered, no crash: {:?}",
                first_line(&page)
            )),
            Ok(page) => Ok(format!(
                "the connection ended with {} bytes and no status page",
                page.len()
            )),
            Err(why) => Ok(format!("no answer: {why}")),
        },
    ));
    let answered = retry_status(ports.http);
    checks.push((
        "host_status_page_answers_after_the_restart",
        answered.clone().and_then(|(page, retry)| {
            judge_status(&page, FAULTS_INIT_READS).map(|s| format!("{s}; retry {retry}"))
        }),
    ));
    checks.push((
        "host_status_page_is_served_by_run_2",
        answered.and_then(|(page, _)| judge_run(&page, 2)),
    ));
    checks.push(("host_echo_returns_each_payload", echo_all(ports.echo)));
    checks
}

/// Fetches `/` until a 200 answers, at most [`RETRIES`] times and
/// [`RETRY_TIME`]: the page and the retry that got it.
fn retry_status(port: u16) -> std::result::Result<(String, u32), String> {
    let deadline = std::time::Instant::now() + RETRY_TIME;
    let mut last = String::new();
    for retry in 1..=RETRIES {
        match fetch(port, "/") {
            Ok(page) if page.starts_with("HTTP/1.0 200 ") => return Ok((page, retry)),
            Ok(page) => last = format!("retry {retry} answered {:?}", first_line(&page)),
            Err(why) => last = format!("retry {retry}: {why}"),
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(format!(
        "no status page within {RETRIES} retries or {RETRY_TIME:?} after the crash (last: {last})"
    ))
}

/// The status page must say it was served by run `run` of the driver.
fn judge_run(page: &str, run: u64) -> std::result::Result<String, String> {
    let line = format!("Served by run {run} of vnet ");
    page.lines()
        .find(|l| l.starts_with("Served by run "))
        .ok_or_else(|| "the page names no run".to_string())
        .and_then(|found| {
            found
                .starts_with(&line)
                .then(|| found.to_string())
                .ok_or_else(|| format!("the page says {found:?}, not run {run}"))
        })
}

/// The console must count exactly `expected` restarts of the driver
/// (`counted` lines with [`RESTART_LINE`]).
pub fn judge_restarts(counted: usize, expected: usize) -> std::result::Result<String, String> {
    if counted == expected {
        Ok(format!("init printed {counted} restart(s) of \"vnet\""))
    } else {
        Err(format!(
            "init printed {counted} restart(s) of \"vnet\", not {expected}"
        ))
    }
}

/// Connects to loopback `port`, retrying a refused connection.
fn connect(port: u16) -> std::result::Result<TcpStream, String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match TcpStream::connect_timeout(&address, TIMEOUT) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(TIMEOUT))
                    .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
                    .map_err(|e| format!("setting timeouts on {address}: {e}"))?;
                return Ok(stream);
            }
            Err(error) => last = format!("attempt {attempt}: {error}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(format!("cannot connect to {address} ({last})"))
}

/// Sends `bytes`, closes the sending half and reads to the end (at most
/// [`READ_LIMIT`] bytes).
fn exchange(port: u16, bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut stream = connect(port)?;
    stream
        .write_all(bytes)
        .map_err(|e| format!("sending {} bytes to port {port}: {e}", bytes.len()))?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("closing the sending half to port {port}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(READ_LIMIT)
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading from port {port} after {} bytes: {e}", answer.len()))?;
    Ok(answer)
}

/// `GET path` over HTTP/1.0: the whole response as text.
fn fetch(port: u16, path: &str) -> std::result::Result<String, String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let answer = exchange(port, request.as_bytes())?;
    String::from_utf8(answer).map_err(|e| format!("GET {path}: the answer is not UTF-8: {e}"))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The status page's line when the driver read no IOMMU fault record.
const NO_FAULT: &str = "vnet's device: 0 IOMMU fault record(s)";
/// The status page's line when init reads the driver's fault records (a
/// restartable domain): a record would make init restart it again, which
/// the console's count of restarts shows.
const FAULTS_INIT_READS: &str = "vnet's device: its fault queue is init's to read";

/// The status page must be a 200 with the driver domain and the three
/// capabilities init gave it for 00:07.0 (and the queue's notification),
/// each live, and the fault line `faults` ([`NO_FAULT`] or
/// [`FAULTS_INIT_READS`]).
fn judge_status(page: &str, faults: &str) -> std::result::Result<String, String> {
    if !page.starts_with("HTTP/1.0 200 OK\r\n") {
        return Err(format!("the answer starts {:?}", first_line(page)));
    }
    let body = page.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let mut missing = Vec::new();
    if !body.contains("domain 0 \"vnet\"") {
        missing.push("the line of domain 0 \"vnet\"".to_string());
    }
    for kind in ["IoDevice", "IoSpace", "IoFaultQueue", "Notification"] {
        let found = body.lines().any(|line| {
            line.trim_start()
                .starts_with(&format!("{kind} for 00:07.0 in slot "))
                && line.ends_with(": live")
        });
        if !found {
            missing.push(format!("a live {kind} for 00:07.0"));
        }
    }
    if !body.contains(faults) {
        missing.push(format!("the line {faults:?}"));
    }
    if missing.is_empty() {
        let lines = body.lines().count();
        Ok(format!(
            "{lines} lines; vnet holds a live IoDevice, IoSpace, IoFaultQueue and Notification for 00:07.0; {faults:?}"
        ))
    } else {
        Err(format!(
            "the page lacks {}; it reads:\n{body}",
            missing.join(", ")
        ))
    }
}

/// The page number on a status page's first line.
fn page_number(page: &str) -> Option<u64> {
    let body = page.split_once("\r\n\r\n")?.1;
    body.lines()
        .next()?
        .strip_prefix("Portcullis status page ")?
        .parse()
        .ok()
}

/// Two fetches in a row must carry consecutive page numbers.
fn judge_fresh(first: &str, second: &str) -> std::result::Result<String, String> {
    match (page_number(first), page_number(second)) {
        (Some(a), Some(b)) if b == a + 1 => Ok(format!("pages {a} and {b}")),
        other => Err(format!(
            "two fetches gave page numbers {other:?}, not consecutive ones"
        )),
    }
}

/// A payload of `len` bytes no two sizes share.
fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(len as u32) as u8)
        .collect()
}

/// Every size of [`ECHO_SIZES`] through the echo service, one connection
/// each.
fn echo_all(port: u16) -> std::result::Result<String, String> {
    for len in ECHO_SIZES {
        let sent = payload(len);
        let back = exchange(port, &sent)?;
        if back != sent {
            let at = back.iter().zip(&sent).position(|(a, b)| a != b);
            return Err(format!(
                "{len} bytes sent, {} came back, first difference at {at:?}",
                back.len()
            ));
        }
    }
    Ok(format!("payloads of {ECHO_SIZES:?} bytes came back intact"))
}

/// The bench client (`cargo xtask bench`, `net-echo-1500`): one
/// connection to the echo port, `rounds` round trips of a `len`-byte
/// payload, each waiting for all of it back before the next, then close.
pub fn echo_rounds(port: u16, rounds: usize, len: usize) -> std::result::Result<(), String> {
    let mut stream = connect(port)?;
    let sent = payload(len);
    let mut back = vec![0u8; len];
    for round in 0..rounds {
        stream
            .write_all(&sent)
            .and_then(|()| stream.read_exact(&mut back))
            .map_err(|e| format!("echo round trip {round} of {len} bytes: {e}"))?;
        if back != sent {
            return Err(format!(
                "echo round trip {round}: the bytes came back changed"
            ));
        }
    }
    stream
        .shutdown(Shutdown::Both)
        .map_err(|e| format!("closing the bench connection: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(body: &str) -> String {
        format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    const GOOD: &str = "Portcullis status page 3\nRead live\n1 domain(s):\ndomain 0 \"vnet\": 4 IOMMU capability(ies) from init\n  IoDevice for 00:07.0 in slot 9: live\n  IoSpace for 00:07.0 in slot 10: live\n  IoFaultQueue for 00:07.0 in slot 11: live\n  Notification for 00:07.0 in slot 12: live\nvnet's device: 0 IOMMU fault record(s) in its fault queue so far (read at this request)\n";

    #[test]
    fn the_status_check_wants_every_capability_live() {
        assert!(judge_status(&page(GOOD), NO_FAULT).is_ok());
        let gone = GOOD.replace("slot 10: live", "slot 10: gone (EmptySlot)");
        let error = judge_status(&page(&gone), NO_FAULT).unwrap_err();
        assert!(error.contains("a live IoSpace"), "{error}");
        assert!(judge_status("HTTP/1.0 404 Not Found\r\n\r\n", NO_FAULT).is_err());
        assert!(judge_status(&page(&GOOD.replace("vnet", "other")), NO_FAULT).is_err());
        let faulted = GOOD.replace("device: 0 IOMMU", "device: 1 IOMMU");
        let error = judge_status(&page(&faulted), NO_FAULT).unwrap_err();
        assert!(error.contains("0 IOMMU fault record(s)"), "{error}");
        assert!(judge_status(&page(GOOD), FAULTS_INIT_READS).is_err());
    }

    #[test]
    fn fresh_pages_count_up() {
        let next = GOOD.replace("page 3", "page 4");
        assert!(judge_fresh(&page(GOOD), &page(&next)).is_ok());
        assert!(judge_fresh(&page(GOOD), &page(GOOD)).is_err());
    }

    #[test]
    fn the_restart_checks_want_run_2_and_one_restart() {
        let run = |n: u64| {
            page(&GOOD.replace(
                "Read live",
                &format!("Served by run {n} of vnet (runs after the first are init's restarts).\nRead live"),
            ))
        };
        assert!(judge_run(&run(2), 2).is_ok());
        assert!(judge_run(&run(1), 2).unwrap_err().contains("not run 2"));
        assert!(judge_run(&run(3), 2).is_err());
        assert!(judge_run(&page(GOOD), 2).is_err());
        assert!(judge_restarts(1, 1).is_ok());
        assert!(judge_restarts(0, 1).is_err());
        assert!(judge_restarts(2, 1).is_err());
    }

    #[test]
    fn netdev_forwards_loopback_only() {
        let args = netdev(Ports::from_http(8080).unwrap()).join(" ");
        assert!(args.contains("hostfwd=tcp:127.0.0.1:8080-:80"), "{args}");
        assert!(args.contains("hostfwd=tcp:127.0.0.1:8081-:7"), "{args}");
        assert!(args.contains("restrict=on"), "{args}");
        assert!(Ports::from_http(u16::MAX).is_err());
        let ports = free_ports().unwrap();
        assert_ne!(ports.http, ports.echo);
    }

    /// A local echo server stands in for the guest's: the echo check
    /// passes against it and fails against one that drops a byte.
    #[test]
    fn the_echo_check_compares_every_byte() {
        for drop_last in [false, true] {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                for _ in ECHO_SIZES {
                    let (mut stream, _) = listener.accept().unwrap();
                    let mut data = Vec::new();
                    stream.read_to_end(&mut data).unwrap();
                    if drop_last {
                        data.pop();
                    }
                    stream.write_all(&data).unwrap();
                    if drop_last {
                        return;
                    }
                }
            });
            let outcome = echo_all(port);
            assert_eq!(outcome.is_ok(), !drop_last, "{outcome:?}");
            server.join().unwrap();
        }
    }

    #[test]
    fn the_net_image_gets_a_netdev_and_others_do_not() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for arch in crate::machines::Arch::ALL {
            let net = crate::image::load(&root, arch, "net").unwrap();
            assert!(granted(&net));
            assert!(!restarts(&net));
            let blk = crate::image::load(&root, arch, "blk").unwrap();
            assert!(!granted(&blk));
            let restarted = crate::image::load(&root, arch, "net-restart").unwrap();
            assert!(granted(&restarted) && restarts(&restarted));
        }
    }
}
