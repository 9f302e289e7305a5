//! The two TCP services: HTTP on port [`HTTP_PORT`] (the status page,
//! built from init's table at each request) and echo on [`ECHO_PORT`].
//!
//! Each service has [`SOCKETS`] listening sockets, so a new connection is
//! taken while an old one is still closing. HTTP reads a request up to the
//! blank line (at most [`REQUEST_LIMIT`] bytes), answers `GET /` with the
//! status page and anything else with 404, and closes. Echo sends back
//! what it receives and closes once the peer closed and all is sent.
//! A run that injects `crash-mid-io` faults once its first whole HTTP
//! request is read, before it answers (`crate::crash`).

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use sys::{Cap, Endpoint, IoFaultQueue};

/// The HTTP port.
pub const HTTP_PORT: u16 = 80;
/// The echo port (RFC 862).
pub const ECHO_PORT: u16 = 7;
/// Listening sockets per service.
pub const SOCKETS: usize = 4;
/// The longest HTTP request read.
const REQUEST_LIMIT: usize = 2048;
/// Socket buffer sizes.
const RX_SIZE: usize = 4096;
const TX_SIZE: usize = 8192;

/// One HTTP connection's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Http {
    /// Reading the request.
    Reading,
    /// The response is queued (or being queued); close when sent.
    Answering,
}

/// The services' sockets and state.
pub struct Services {
    http: Vec<(SocketHandle, Http, Vec<u8>, Vec<u8>)>,
    /// Each echo socket and the bytes it echoed on its connection.
    echo: Vec<(SocketHandle, u64)>,
    init: Cap<Endpoint>,
    faults: Cap<IoFaultQueue>,
    /// Which run of the driver this is.
    run: crate::Run,
    /// Status pages served.
    pub pages: u64,
    /// Bytes echoed.
    pub echoed: u64,
    /// An echo connection's bytes reached a multiple of [`ROUND`] in the
    /// last `serve` (the end of a bench round trip).
    pub round_done: bool,
    /// An echo connection ended in the last `serve`: the bytes it echoed.
    pub finished: Option<u64>,
}

/// The payload of one bench round trip: the host sends it and waits for
/// all of it back before it sends the next.
pub const ROUND: u64 = 1500;

fn socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; RX_SIZE]),
        tcp::SocketBuffer::new(vec![0; TX_SIZE]),
    );
    // Echo answers at once; Nagle would hold a short tail back for an ACK.
    socket.set_nagle_enabled(false);
    socket
}

impl Services {
    /// Adds the sockets to `sockets`.
    pub fn new(
        sockets: &mut SocketSet<'static>,
        init: Cap<Endpoint>,
        faults: Cap<IoFaultQueue>,
        run: crate::Run,
    ) -> Services {
        let http = (0..SOCKETS)
            .map(|_| (sockets.add(socket()), Http::Reading, Vec::new(), Vec::new()))
            .collect();
        let echo = (0..SOCKETS).map(|_| (sockets.add(socket()), 0)).collect();
        Services {
            http,
            echo,
            init,
            faults,
            run,
            pages: 0,
            echoed: 0,
            round_done: false,
            finished: None,
        }
    }

    /// Listens again where a socket is closed and moves each connection
    /// on; whether anything was read or written.
    pub fn serve(&mut self, sockets: &mut SocketSet<'static>) -> bool {
        let mut busy = false;
        for index in 0..self.http.len() {
            busy |= self.serve_http(sockets, index);
        }
        self.round_done = false;
        self.finished = None;
        for (handle, connection) in &mut self.echo {
            let socket = sockets.get_mut::<tcp::Socket>(*handle);
            if !socket.is_open() && *connection > 0 {
                self.finished = Some(*connection);
                *connection = 0;
            }
            let moved = echo(socket);
            if moved > 0 {
                busy = true;
                *connection += moved;
                self.echoed += moved;
                self.round_done |= connection.is_multiple_of(ROUND);
            }
        }
        busy
    }

    fn serve_http(&mut self, sockets: &mut SocketSet<'static>, index: usize) -> bool {
        let (handle, state, request, response) = &mut self.http[index];
        let socket = sockets.get_mut::<tcp::Socket>(*handle);
        if !socket.is_open() {
            *state = Http::Reading;
            request.clear();
            response.clear();
            if let Err(e) = socket.listen(HTTP_PORT) {
                rt::println!("[vnet] listening on port {HTTP_PORT}: {e:?}");
            }
            return false;
        }
        let mut busy = false;
        if *state == Http::Reading && socket.can_recv() {
            let room = REQUEST_LIMIT - request.len();
            let _ = socket.recv(|data| {
                let take = data.len().min(room);
                request.extend_from_slice(&data[..take]);
                (take, ())
            });
            busy = true;
            let ended = request.windows(4).any(|w| w == b"\r\n\r\n");
            if ended || request.len() == REQUEST_LIMIT {
                if self.run.crashes {
                    crate::crash("the run's first HTTP request");
                }
                *response = if request.starts_with(b"GET / ") {
                    self.pages += 1;
                    let faults = crate::nic::report_faults(self.faults);
                    let page = status_page(self.init, self.pages, self.run.number, faults);
                    answer("200 OK", &page)
                } else {
                    answer("404 Not Found", "Only / is served here.\n")
                };
                *state = Http::Answering;
            }
        } else if *state == Http::Reading && !socket.may_recv() && socket.may_send() {
            // The peer closed before a whole request.
            socket.close();
        }
        if *state == Http::Answering && !response.is_empty() && socket.can_send() {
            if let Ok(sent) = socket.send_slice(response) {
                response.drain(..sent);
                busy = true;
            }
            if response.is_empty() {
                socket.close();
            }
        }
        busy
    }
}

/// Echoes what `socket` received; the bytes it moved.
fn echo(socket: &mut tcp::Socket<'static>) -> u64 {
    if !socket.is_open() {
        if let Err(e) = socket.listen(ECHO_PORT) {
            rt::println!("[vnet] listening on port {ECHO_PORT}: {e:?}");
        }
        return 0;
    }
    let mut moved = 0;
    while socket.can_recv() && socket.can_send() {
        let mut chunk = [0u8; 2048];
        let room = socket.send_capacity() - socket.send_queue();
        let Ok(len) = socket.recv_slice(&mut chunk[..room.min(2048)]) else {
            break;
        };
        if len == 0 {
            break;
        }
        // `room` was checked: all of it fits.
        let _ = socket.send_slice(&chunk[..len]);
        moved += len as u64;
    }
    if !socket.may_recv() && socket.send_queue() == 0 && socket.may_send() {
        socket.close();
    }
    moved
}

/// An HTTP/1.0 response with `body`, closing the connection.
fn answer(status: &str, body: &str) -> Vec<u8> {
    let mut text = String::new();
    let _ = write!(
        text,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    text.into_bytes()
}

/// The status page: every domain of the image and the IOMMU capabilities
/// init placed in its CNode, each checked by init now
/// (`sys::status`).
fn status_page(
    init: Cap<Endpoint>,
    served: u64,
    run: u64,
    faults: Result<u64, sys::Error>,
) -> String {
    let mut page = String::new();
    let _ = writeln!(page, "Portcullis status page {served}");
    let _ = writeln!(
        page,
        "Served by run {run} of vnet (runs after the first are init's restarts)."
    );
    let _ = writeln!(
        page,
        "Read live: at this request init checked that each domain's slot still holds the capability (CNode.Copy into a scratch slot)."
    );
    let mut names: Vec<String> = Vec::new();
    let mut name = [0u8; 24];
    loop {
        match sys::status::domain_name(init, names.len() as u64, &mut name) {
            Ok(Some((len, _))) => names.push(String::from(
                core::str::from_utf8(&name[..len]).unwrap_or("?"),
            )),
            Ok(None) => break,
            Err(e) => {
                let _ = writeln!(page, "error: asking init for domain names: {e:?}");
                break;
            }
        }
    }
    let mut entries = Vec::new();
    loop {
        match sys::status::entry(init, entries.len() as u64) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => break,
            Err(e) => {
                let _ = writeln!(page, "error: asking init for its table: {e:?}");
                break;
            }
        }
    }
    let _ = writeln!(page, "{} domain(s):", names.len());
    for (index, name) in names.iter().enumerate() {
        let held: Vec<_> = entries
            .iter()
            .filter(|e| e.domain == index as u64)
            .collect();
        let _ = writeln!(
            page,
            "domain {index} \"{name}\": {} IOMMU capability(ies) from init",
            held.len()
        );
        for entry in held {
            let pci = entry.pci;
            let _ = writeln!(
                page,
                "  {} for {:02x}:{:02x}.{} in slot {}: {}",
                entry.kind.name(),
                pci >> 8,
                (pci >> 3) & 0x1f,
                pci & 7,
                entry.slot,
                match entry.live {
                    Ok(()) => String::from("live"),
                    Err(e) => rt::__format!("gone ({e:?})"),
                }
            );
        }
    }
    let _ = match faults {
        Ok(faults) => writeln!(
            page,
            "vnet's device: {faults} IOMMU fault record(s) in its fault queue so far (read at this request)"
        ),
        // A domain init restarts gets a copy of its queue with no right:
        // init takes the records and restarts the driver on any.
        Err(sys::Error::InsufficientRights) => writeln!(
            page,
            "vnet's device: its fault queue is init's to read (InsufficientRights here): init restarts vnet on any IOMMU fault record"
        ),
        Err(e) => writeln!(page, "vnet's device: reading its fault queue: {e:?}"),
    };
    page
}
