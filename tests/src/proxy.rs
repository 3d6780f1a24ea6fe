//! A TCP proxy a test can cut and restore, to take a service away from one process while the
//! others keep it (a node losing its database, say).

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the accepting thread looks for new connections and for a cut.
const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// Forwards connections from a port of its own to `target`, until cut.
pub struct TcpProxy {
    target: SocketAddr,
    address: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Every socket of every forwarded connection, both sides, so a cut closes them.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts forwarding from a port chosen by the kernel to `target`.
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let mut proxy = TcpProxy {
            target,
            address,
            cut: Arc::new(AtomicBool::new(false)),
            sockets: Arc::default(),
            acceptor: None,
        };
        proxy.accept_on(listener);
        proxy
    }

    /// The address to connect to instead of the target.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every forwarded connection and refuses new ones, as a lost network would.
    pub fn cut(&mut self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Forwards again, on the same port.
    pub fn restore(&mut self) {
        self.cut.store(false, Ordering::SeqCst);
        let listener = TcpListener::bind(self.address).expect("cannot bind the proxy again");
        self.accept_on(listener);
    }

    fn accept_on(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let (cut, sockets, target) = (self.cut.clone(), self.sockets.clone(), self.target);
        self.acceptor = Some(std::thread::spawn(move || {
            while !cut.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(target) else {
                            continue;
                        };
                        forward(client, server, &sockets);
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(ACCEPT_POLL);
                    }
                    Err(_) => std::thread::sleep(ACCEPT_POLL),
                }
            }
        }));
    }
}

/// Copies both ways on threads of their own; a cut shuts the sockets, which ends them.
fn forward(client: TcpStream, server: TcpStream, sockets: &Mutex<Vec<TcpStream>>) {
    let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut sockets = sockets.lock().unwrap();
        for socket in [&client, &server] {
            if let Ok(socket) = socket.try_clone() {
                sockets.push(socket);
            }
        }
    }
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    pipe(client, server_copy);
    pipe(server, client_copy);
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
