//! Whole-journey checks. They run only once every step's kind and `next` are sound, so
//! each finding is about the shape of the journey and not a repeat of a typo.

use super::raw::RawStep;
use super::{Check, Kind, channel};
use crate::definition::CodeChannel;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use toml::Spanned;

/// A step reduced to what the graph checks need; only built when the step's kind and every
/// `next` it names are sound.
#[derive(Debug)]
pub(super) struct Node {
    id: String,
    span: Range<usize>,
    kind: Kind,
    channel: Option<CodeChannel>,
    next: Vec<String>,
}

impl Node {
    pub(super) fn of(raw: &Spanned<RawStep>, kind: Kind, ids: &[String]) -> Option<Node> {
        let s = raw.get_ref();
        let channel = match kind {
            Kind::Code => Some(channel(s.channel.as_ref()?.get_ref())?),
            _ => None,
        };
        let next = match kind {
            Kind::Complete => Vec::new(),
            Kind::Choose => s
                .options
                .as_ref()?
                .get_ref()
                .iter()
                .map(|o| o.get_ref().next.as_ref().map(|n| n.get_ref().clone()))
                .collect::<Option<_>>()?,
            _ => vec![s.next.as_ref()?.get_ref().clone()],
        };
        if next.iter().any(|n| !ids.contains(n)) {
            return None;
        }
        Some(Node {
            id: s.id.as_ref()?.get_ref().clone(),
            span: raw.span(),
            kind,
            channel,
            next,
        })
    }

    fn is_email_code(&self) -> bool {
        self.channel == Some(CodeChannel::Email)
    }

    /// Steps that contact the phone (R19).
    fn is_phone(&self) -> bool {
        self.channel == Some(CodeChannel::Sms) || self.kind == Kind::Voice
    }

    /// Steps that prove the person controls a registered channel (R28).
    fn is_verification(&self) -> bool {
        matches!(self.kind, Kind::Code | Kind::Voice)
    }
}

impl Check<'_> {
    /// Whole-journey checks on a sound graph.
    pub(super) fn graph(&mut self, nodes: &[Node], start: usize) {
        let index: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let succ: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                n.next
                    .iter()
                    .filter_map(|id| index.get(id.as_str()).copied())
                    .collect()
            })
            .collect();
        let Some(start_id) = nodes.get(start).map(|n| n.id.clone()) else {
            return;
        };

        let reached = search(&succ, &[start], |_| true);
        for (node, parent) in nodes.iter().zip(&reached) {
            if parent.is_none() {
                self.error(
                    &node.span,
                    format!(
                        "step `{}` cannot be reached from `start = {start_id:?}`",
                        node.id
                    ),
                    format!(
                        "point a `next` (or a choose option) at `{}`, or remove the step",
                        node.id
                    ),
                );
            }
        }

        let completes: Vec<&str> = nodes
            .iter()
            .filter(|n| n.kind == Kind::Complete)
            .map(|n| n.id.as_str())
            .collect();
        if completes.is_empty() {
            if let Some(last) = nodes.last() {
                self.error(
                    &last.span,
                    "the definition has no `complete` step, so no journey can finish",
                    "add a `[[steps]]` table with `kind = \"complete\"` and point the final `next` at it",
                );
            }
        } else {
            let mut pred = vec![Vec::new(); nodes.len()];
            for (from, targets) in succ.iter().enumerate() {
                for &to in targets {
                    if let Some(p) = pred.get_mut(to) {
                        p.push(from);
                    }
                }
            }
            let ends: Vec<usize> = nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.kind == Kind::Complete)
                .map(|(i, _)| i)
                .collect();
            let finishes = search(&pred, &ends, |_| true);
            // Report the loops (and dead ends) themselves, not every step that leads into one.
            for (i, node) in nodes.iter().enumerate() {
                let stuck = reached.get(i).is_some_and(Option::is_some)
                    && finishes.get(i).is_some_and(Option::is_none);
                if !stuck {
                    continue;
                }
                let next = succ.get(i).map_or(&[][..], Vec::as_slice);
                let back = search(&succ, next, |_| true);
                let on_loop = back.get(i).is_some_and(Option::is_some);
                if !on_loop && !next.is_empty() {
                    continue;
                }
                let why = if on_loop {
                    format!(
                        "the loop {} → {} never reaches one",
                        node.id,
                        path(nodes, &back, i)
                    )
                } else {
                    "it leads nowhere".to_owned()
                };
                self.error(
                    &node.span,
                    format!(
                        "step `{}` has no way to finish: no path from it reaches a `complete` step",
                        node.id
                    ),
                    format!(
                        "{why}; change a `next` so it leads to {}",
                        completes.join(" or ")
                    ),
                );
            }
        }

        // R19: walk from start without going past an email code step.
        let before_email = search(&succ, &[start], |i| {
            nodes.get(i).is_some_and(|n| !n.is_email_code())
        });
        for (i, node) in nodes.iter().enumerate() {
            if node.is_phone() && before_email.get(i).is_some_and(Option::is_some) {
                self.error(
                    &node.span,
                    format!(
                        "an SMS or voice step must come after the email code step (R19): `{}` is reached by {}",
                        node.id,
                        path(nodes, &before_email, i)
                    ),
                    format!(
                        "send nothing to the phone before the email code is verified: put a `code` step \
                         with `channel = \"email\"` on every path from `start` to `{}`",
                        node.id
                    ),
                );
            }
        }

        // R28: walk from start without going past any verification step.
        let unverified = search(&succ, &[start], |i| {
            nodes.get(i).is_some_and(|n| !n.is_verification())
        });
        for (i, node) in nodes.iter().enumerate() {
            if node.kind == Kind::SetPassword && unverified.get(i).is_some_and(Option::is_some) {
                self.error(
                    &node.span,
                    format!(
                        "step `{}` sets a password without any verification (R28): it is reached by {}",
                        node.id,
                        path(nodes, &unverified, i)
                    ),
                    format!(
                        "put a `code` or `voice` step on every path from `start` to `{}`",
                        node.id
                    ),
                );
            }
        }
    }
}

/// Breadth-first search from `starts` that does not continue past a node for which `pass`
/// is false. Returns each reached node's predecessor on a shortest path (a start is its own).
fn search(
    succ: &[Vec<usize>],
    starts: &[usize],
    pass: impl Fn(usize) -> bool,
) -> Vec<Option<usize>> {
    let mut parent = vec![None; succ.len()];
    let mut queue = VecDeque::new();
    for &start in starts {
        if let Some(slot) = parent.get_mut(start) {
            *slot = Some(start);
            queue.push_back(start);
        }
    }
    while let Some(i) = queue.pop_front() {
        if !pass(i) {
            continue;
        }
        for &j in succ.get(i).into_iter().flatten() {
            if let Some(slot @ None) = parent.get_mut(j) {
                *slot = Some(i);
                queue.push_back(j);
            }
        }
    }
    parent
}

/// `a → b → c`: the path [`search`] found from its start to `end`.
fn path(nodes: &[Node], parent: &[Option<usize>], end: usize) -> String {
    let mut ids = Vec::new();
    let mut at = end;
    // Bounded: a path visits each node at most once.
    for _ in 0..=nodes.len() {
        let Some(node) = nodes.get(at) else { break };
        ids.push(node.id.as_str());
        match parent.get(at).copied().flatten() {
            Some(p) if p != at => at = p,
            _ => break,
        }
    }
    ids.reverse();
    ids.join(" → ")
}
