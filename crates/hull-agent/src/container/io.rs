//! Waiting for processes and their stdio: WaitProcess, ReadStdout/ReadStderr, WriteStdin,
//! CloseStdin and ResizeTty, by container and exec id.

use super::Runtime;
use crate::error::AgentError;

fn io_err(what: &str, e: std::io::Error) -> AgentError {
    AgentError::io(what, e)
}

impl Runtime {
    /// Wait for a process's exit status (code, or 128 + signal).
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<i32, AgentError> {
        self.process(id, exec_id)?.wait().await
    }

    /// Up to `max_len` bytes of stdout, or of stderr; empty at EOF (stderr: always, with a
    /// terminal).
    pub async fn read_output(
        &self,
        id: &str,
        exec_id: &str,
        stderr: bool,
        max_len: u32,
    ) -> Result<Vec<u8>, AgentError> {
        let p = self.process(id, exec_id)?;
        p.stdio
            .read_output(stderr, max_len)
            .await
            .map_err(|e| io_err(if stderr { "read stderr" } else { "read stdout" }, e))
    }

    /// Write to stdin; returns how much was taken (at most MAX_WRITE_CHUNK).
    pub async fn write_stdin(
        &self,
        id: &str,
        exec_id: &str,
        data: &[u8],
    ) -> Result<usize, AgentError> {
        let p = self.process(id, exec_id)?;
        p.stdio.write_stdin(data).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => {
                AgentError::FailedPrecondition("stdin is closed".into())
            }
            _ => io_err("write stdin", e),
        })
    }

    /// Close stdin (the process sees EOF).
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), AgentError> {
        self.process(id, exec_id)?.stdio.close_stdin();
        Ok(())
    }

    /// Resize the process's pty.
    pub fn resize(&self, id: &str, exec_id: &str, rows: u32, cols: u32) -> Result<(), AgentError> {
        let p = self.process(id, exec_id)?;
        let (Ok(rows), Ok(cols)) = (u16::try_from(rows), u16::try_from(cols)) else {
            return Err(AgentError::InvalidArgument(format!(
                "bad window size {rows}x{cols}"
            )));
        };
        p.stdio.resize(rows, cols).map_err(|e| match e.kind() {
            std::io::ErrorKind::Unsupported => AgentError::FailedPrecondition(e.to_string()),
            _ => io_err("resize", e),
        })
    }
}
