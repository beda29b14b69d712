//! Clients of containerd's CRI streaming server (the URL Exec, Attach and PortForward return)
//! over WebSocket with the `v4.channel.k8s.io` subprotocol: every binary message starts with a
//! channel byte. Exec: 0 stdin, 1 stdout, 2 stderr, 3 error (a JSON metav1.Status at the end,
//! with the exit code), 4 resize. PortForward: per port a data channel (2n) and an error
//! channel (2n+1), each opened by the server with the port as 2 little-endian bytes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// The subprotocol containerd 1.6's streaming server accepts for WebSocket clients.
pub const PROTOCOL: &str = "v4.channel.k8s.io";

/// What an exec over the stream produced.
#[derive(Debug, Default)]
pub struct ExecOutput {
    /// Channel 1.
    pub stdout: Vec<u8>,
    /// Channel 2.
    pub stderr: Vec<u8>,
    /// Channel 3: the final status (JSON text), if sent.
    pub status: String,
}

impl ExecOutput {
    /// The exit code the status reports: 0 for Success, the `ExitCode` cause for a failure.
    pub fn exit_code(&self) -> Option<i32> {
        let v: serde_json::Value = serde_json::from_str(&self.status).ok()?;
        if v["status"] == "Success" {
            return Some(0);
        }
        v["details"]["causes"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok()
    }

    /// stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Result<Ws, String> {
    let ws_url = url
        .strip_prefix("http://")
        .map(|rest| format!("ws://{rest}"))
        .ok_or_else(|| format!("streaming URL {url} is not http://"))?;
    let mut req = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("request for {ws_url}: {e}"))?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(PROTOCOL));
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| format!("WebSocket connect to {ws_url}: {e}"))?;
    let proto = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if proto != PROTOCOL {
        return Err(format!(
            "server chose subprotocol {proto:?}, not {PROTOCOL}"
        ));
    }
    Ok(ws)
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// Run the exec (or attach) behind `url` (from Exec or Attach), sending `stdin` first if given,
/// and collect output until the server closes the stream or `timeout` passes.
pub async fn exec(
    url: &str,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<ExecOutput, String> {
    let mut ws = connect(url).await?;
    if let Some(input) = stdin {
        ws.send(framed(0, input))
            .await
            .map_err(|e| format!("send stdin: {e}"))?;
    }
    let mut out = ExecOutput::default();
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg.map_err(|e| format!("read: {e}"))? {
                Message::Binary(data) => match data.split_first() {
                    Some((1, rest)) => out.stdout.extend_from_slice(rest),
                    Some((2, rest)) => out.stderr.extend_from_slice(rest),
                    Some((3, rest)) => out.status.push_str(&String::from_utf8_lossy(rest)),
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
        Ok::<(), String>(())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r.map(|()| out),
        Err(_) => Err(format!(
            "exec stream still open after {timeout:?}; so far stdout {:?}, stderr {:?}",
            out.stdout_text(),
            out.stderr_text()
        )),
    }
}

/// What one port-forward connection carried back.
#[derive(Debug, Default)]
pub struct Forwarded {
    /// Bytes from the pod's port (data channel, after the port prefix).
    pub data: Vec<u8>,
    /// Text on the error channel (after the port prefix), e.g. a refused connection.
    pub error: String,
}

/// Forward one connection to the single port behind `url` (from PortForward): send `payload`,
/// then collect what comes back until the server closes the stream or `timeout` passes.
pub async fn port_forward(
    url: &str,
    payload: &[u8],
    timeout: Duration,
) -> Result<Forwarded, String> {
    let mut ws = connect(url).await?;
    ws.send(framed(0, payload))
        .await
        .map_err(|e| format!("send to data channel: {e}"))?;
    let mut out = Forwarded::default();
    // The first 2 bytes of each channel are the port number.
    let mut prefix = [2usize, 2usize];
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg.map_err(|e| format!("read: {e}"))? {
                Message::Binary(data) => {
                    let Some((&ch, mut rest)) = data.split_first() else {
                        continue;
                    };
                    let ch = usize::from(ch);
                    if ch > 1 {
                        continue;
                    }
                    let skip = prefix[ch].min(rest.len());
                    prefix[ch] -= skip;
                    rest = &rest[skip..];
                    if ch == 0 {
                        out.data.extend_from_slice(rest);
                    } else {
                        out.error.push_str(&String::from_utf8_lossy(rest));
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        Ok::<(), String>(())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r.map(|()| out),
        Err(_) => Err(format!(
            "port-forward stream still open after {timeout:?}; so far data {:?}, error {:?}",
            String::from_utf8_lossy(&out.data),
            out.error
        )),
    }
}
