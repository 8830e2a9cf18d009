//! Agent runs: the runner follows the agent's stdout while it runs (usage, cost, budget) and
//! reports its final text and the workspace's changes when it has ended.

mod parse;
mod workspace;

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use kiln_runner_protocol::agent::{AgentReport, AgentWatch};

use parse::Parser;
use workspace::Snapshot;

/// Follows one agent run.
#[derive(Debug)]
pub(crate) struct Watcher {
    watch: AgentWatch,
    parser: Parser,
    before: Snapshot,
    /// Every chunk of stdout as the pump read it, before the output limit cut anything.
    tap: (SyncSender<Vec<u8>>, Receiver<Vec<u8>>),
    exceeded: Option<String>,
}

/// Chunks (of at most 64 KiB) queued for the parser: a bound on the runner's memory when an
/// agent floods faster than it is parsed.
const TAP_CHUNKS: usize = 256;

impl Watcher {
    /// Snapshots the workspace; call before the agent starts.
    pub(crate) fn start(watch: &AgentWatch, workspace: &Path) -> Watcher {
        Watcher {
            parser: Parser::new(watch.parser),
            watch: watch.clone(),
            before: Snapshot::take(workspace),
            tap: sync_channel(TAP_CHUNKS),
            exceeded: None,
        }
    }

    /// Where the stdout pump sends what it reads.
    pub(crate) fn tap(&self) -> SyncSender<Vec<u8>> {
        self.tap.0.clone()
    }

    /// Parses what the agent printed since the last call; `Some(why)` once its budget is spent.
    pub(crate) fn poll(&mut self) -> Option<String> {
        while let Ok(chunk) = self.tap.1.try_recv() {
            self.parser.feed(&chunk);
        }
        if self.exceeded.is_none() {
            self.exceeded = self.over_budget();
        }
        self.exceeded.clone()
    }

    fn over_budget(&self) -> Option<String> {
        if let (Some(max), Some(usage)) = (self.watch.max_tokens, self.parser.usage())
            && usage.total() > max
        {
            return Some(format!(
                "token budget exceeded: {} used, max_tokens {max}",
                usage.total()
            ));
        }
        if let (Some(max), Some(cost)) = (self.watch.max_cost, self.parser.cost())
            && cost > max
        {
            return Some(format!("cost budget exceeded: {cost} spent, max {max}"));
        }
        None
    }

    /// The report, once the agent and everything it started have ended.
    pub(crate) fn finish(mut self, workspace: &Path) -> AgentReport {
        self.poll();
        let exceeded = self.exceeded.clone();
        let (changed_files, changed_files_truncated) =
            workspace::changes(&self.before, workspace, &self.watch);
        let (final_text, usage, cost_usd) = self.parser.finish();
        AgentReport {
            final_text,
            usage,
            cost_usd,
            changed_files,
            changed_files_truncated,
            budget_exceeded: exceeded,
        }
    }
}
