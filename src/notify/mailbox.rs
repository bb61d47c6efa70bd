//! A local mailbox file (mbox, `mboxrd` quoting): the same RFC 5322 message SMTP would carry, appended to
//! a file. `patrol demo` uses it when no SMTP server is configured; it is also a local audit trail of what
//! patrol announced. The file is created `0600`; appends are serialized within the process.

use super::Target;
use super::channel::{Channel, SendError};
use super::digest::Message;
use async_trait::async_trait;
use lettre::message::Mailbox;
use std::path::PathBuf;
use time::OffsetDateTime;

#[derive(Debug)]
pub struct MailboxChannel {
    path: PathBuf,
    from: Mailbox,
    lock: tokio::sync::Mutex<()>,
}

impl MailboxChannel {
    pub fn new(path: PathBuf, from: Mailbox) -> Self {
        Self { path, from, lock: tokio::sync::Mutex::new(()) }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// The mbox `From ` separator line's date (asctime format).
fn asctime(t: OffsetDateTime) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        DAYS[t.weekday().number_days_from_monday() as usize],
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.year()
    )
}

/// One mbox entry: separator, the message with LF line ends and `>From ` quoting, a blank line.
pub fn mbox_entry(envelope_from: &str, at: OffsetDateTime, rfc5322: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(rfc5322).replace("\r\n", "\n");
    let mut out = format!("From {envelope_from} {}\n", asctime(at));
    for line in text.split('\n') {
        if line.trim_start_matches('>').starts_with("From ") {
            out.push('>');
        }
        out.push_str(line);
        out.push('\n');
    }
    if !out.ends_with("\n\n") {
        out.push('\n');
    }
    out.into_bytes()
}

#[async_trait]
impl Channel for MailboxChannel {
    fn name(&self) -> &'static str {
        "mailbox"
    }

    async fn send(&self, to: &Target, message: &Message) -> Result<(), SendError> {
        let Target::Email(addr) = to else {
            return Err(SendError::permanent(format!("the mailbox takes email targets, not {to}")));
        };
        let email = super::smtp::build_email(&self.from, addr, message)?;
        let entry = mbox_entry(self.from.email.as_ref(), OffsetDateTime::now_utc(), &email.formatted());
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || append(&path, &entry))
            .await
            .map_err(|e| SendError::permanent(format!("mailbox write task failed: {e}")))?
            .map_err(|e| SendError::permanent(format!("cannot append to mailbox {}: {e}", self.path.display())))
    }
}

fn append(path: &std::path::Path, entry: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(entry)?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn mbox_quoting_and_separator() {
        let e = mbox_entry(
            "patrol@contoso.com",
            datetime!(2027-01-07 03:04:05 UTC),
            b"Subject: x\r\n\r\nFrom here\r\n>From there\r\nok\r\n",
        );
        let s = String::from_utf8(e).unwrap();
        assert_eq!(
            s,
            "From patrol@contoso.com Thu Jan  7 03:04:05 2027\nSubject: x\n\n>From here\n>>From there\nok\n\n"
        );
    }
}
