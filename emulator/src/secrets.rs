//! A bounded, in-memory record of every secret value the emulator minted (PATs, access tokens, refresh
//! tokens, client secrets), so tests can scan their captured output and logs for leaks. Never persisted,
//! never logged.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Keeps the newest `capacity` secrets.
#[derive(Debug)]
pub struct MintedSecrets {
    capacity: usize,
    values: Mutex<VecDeque<(&'static str, String)>>,
}

impl MintedSecrets {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, values: Mutex::new(VecDeque::new()) }
    }

    pub fn record(&self, kind: &'static str, value: &str) {
        if self.capacity == 0 {
            return;
        }
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() >= self.capacity {
            v.pop_front();
        }
        v.push_back((kind, value.to_string()));
    }

    /// (kind, value) pairs, oldest first.
    pub fn list(&self) -> Vec<(&'static str, String)> {
        self.values.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest() {
        let s = MintedSecrets::new(2);
        s.record("pat", "a");
        s.record("pat", "b");
        s.record("pat", "c");
        let v: Vec<String> = s.list().into_iter().map(|(_, v)| v).collect();
        assert_eq!(v, vec!["b", "c"]);
        let off = MintedSecrets::new(0);
        off.record("pat", "x");
        assert!(off.list().is_empty());
    }
}
