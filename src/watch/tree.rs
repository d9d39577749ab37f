/*!
The watched directories as a tree of nodes `{parent, name}`.

A directory's path is never stored; it is rebuilt from the chain of parents when needed.
So renaming or moving a directory is O(1) (change one node's parent and name), and a
stale path can never survive a rename: the bug where a re-created directory with an old
name looked "already watched" cannot happen, because nothing is keyed by path.

Memory matters here: a file server has millions of directories, and this is the only
per-directory state the worker keeps (issue target: ~100 bytes per directory). So:
- nodes are 24-byte records in a slab (`Vec` plus a free list), addressed by `u32` ids;
- names live in one byte arena, each behind its length (one byte; names of 255 bytes
  and more, which Linux file systems do not make, take three), not in an allocation
  each; the node holds the offset. Renames and removals leave garbage there, compacted
  when it is half the arena;
- children are found through one index for the whole tree, a `hashbrown::HashTable` of
  node ids hashed by `(parent, name)`: 4 bytes and a control byte per directory, the
  name itself is not copied into a key;
- nodes by watch descriptor are a paged array indexed by the descriptor ([`WdMap`]):
  the kernel hands descriptors out in ascending order (and does not reuse one before the
  counter wraps), so the pages of a scanned tree are full: 4 bytes a directory, where a
  hash table of node ids took 10.5 at 1,000,000 directories (buckets are a power of two:
  2,097,152 of 5 bytes) and a `HashMap<i32, u32>` more. A page is freed when its last
  descriptor goes, so churn (directories made and removed for years) leaves no trail;
- a node's children are an intrusive doubly linked list (`first_child`, `next`,
  `prev`), for listing and removing a subtree.
*/

use hashbrown::HashTable;
use std::hash::BuildHasher;

pub type NodeId = u32;

/// The root node's id.
pub const ROOT: NodeId = 0;
/// No node (no parent, no child, end of a sibling list).
const NONE: NodeId = u32::MAX;
/// The parent of a free slot.
const DEAD: NodeId = u32::MAX - 1;
/// No watch descriptor.
const NO_WD: i32 = -1;

#[derive(Debug, Clone, Copy)]
struct Node {
    parent: NodeId,
    first_child: NodeId,
    next: NodeId,
    prev: NodeId,
    wd: i32,
    /// Where the name's length and then its bytes are in the arena.
    name_off: u32,
}

pub struct Tree {
    nodes: Vec<Node>,
    free: Vec<NodeId>,
    /// All names, back to back.
    names: Vec<u8>,
    /// Bytes of `names` no node uses any more.
    garbage: usize,
    /// Children by `(parent, name)`.
    index: HashTable<NodeId>,
    hasher: std::collections::hash_map::RandomState,
    /// Nodes by watch descriptor (at most one node per descriptor: a directory reached
    /// twice, through a bind mount, shares its descriptor; the last one set keeps it).
    by_wd: WdMap,
    len: usize,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").field("len", &self.len).finish()
    }
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

/// Descriptors a [`WdMap`] page holds (a page is 4 KiB of node ids, and its count).
const WD_PAGE: usize = 1024;

struct WdPage {
    live: u32,
    slots: [NodeId; WD_PAGE],
}

/// Node ids by watch descriptor: pages of [`WD_PAGE`] slots, found by `wd / WD_PAGE` in a
/// small map (one entry per 1024 descriptors), allocated on first use and freed when
/// empty. Descriptors are small positive integers handed out in ascending order.
#[derive(Default)]
struct WdMap {
    pages: std::collections::HashMap<u32, Box<WdPage>>,
    len: usize,
}

impl WdMap {
    fn split(wd: i32) -> Option<(u32, usize)> {
        let wd = u32::try_from(wd).ok()?;
        Some((wd / WD_PAGE as u32, wd as usize % WD_PAGE))
    }

    fn get(&self, wd: i32) -> Option<NodeId> {
        let (page, slot) = Self::split(wd)?;
        let id = self.pages.get(&page)?.slots[slot];
        (id != NONE).then_some(id)
    }

    /// Sets `wd`'s node (replacing any other).
    fn set(&mut self, wd: i32, id: NodeId) {
        let Some((page, slot)) = Self::split(wd) else {
            return;
        };
        let p = self.pages.entry(page).or_insert_with(|| {
            Box::new(WdPage {
                live: 0,
                slots: [NONE; WD_PAGE],
            })
        });
        if p.slots[slot] == NONE {
            p.live += 1;
            self.len += 1;
        }
        p.slots[slot] = id;
    }

    /// Drops `wd`'s entry if it is `id`'s.
    fn remove(&mut self, wd: i32, id: NodeId) {
        let Some((page, slot)) = Self::split(wd) else {
            return;
        };
        let Some(p) = self.pages.get_mut(&page) else {
            return;
        };
        if p.slots[slot] != id {
            return;
        }
        p.slots[slot] = NONE;
        p.live -= 1;
        self.len -= 1;
        if p.live == 0 {
            self.pages.remove(&page);
        }
    }
}

/// The length prefix that says "two more bytes of length follow".
const LONG: u8 = u8::MAX;

/// The name at `off` in the arena, and the bytes it takes there (prefix included).
fn entry_at(names: &[u8], off: u32) -> (&[u8], usize) {
    let off = off as usize;
    let Some(&first) = names.get(off) else {
        return (&[], 0); // the root's empty name
    };
    let (len, head) = if first == LONG {
        (
            u16::from_le_bytes([names[off + 1], names[off + 2]]) as usize,
            3,
        )
    } else {
        (first as usize, 1)
    };
    (&names[off + head..off + head + len], head + len)
}

fn name_of<'a>(names: &'a [u8], n: &Node) -> &'a [u8] {
    entry_at(names, n.name_off).0
}

fn hash_of(hasher: &impl BuildHasher, parent: NodeId, name: &[u8]) -> u64 {
    hasher.hash_one((parent, name))
}

/// Appends `name` behind its length.
fn push_name(names: &mut Vec<u8>, name: &[u8]) {
    match u8::try_from(name.len()) {
        Ok(len) if len != LONG => names.push(len),
        _ => {
            let len = u16::try_from(name.len()).expect("a file name under 64 KiB");
            names.push(LONG);
            names.extend_from_slice(&len.to_le_bytes());
        }
    }
    names.extend_from_slice(name);
}

impl Tree {
    /// A tree holding only the root (not yet watched).
    pub fn new() -> Self {
        Tree {
            nodes: vec![Node {
                parent: NONE,
                first_child: NONE,
                next: NONE,
                prev: NONE,
                wd: NO_WD,
                name_off: u32::MAX,
            }],
            free: Vec::new(),
            names: Vec::new(),
            garbage: 0,
            index: HashTable::new(),
            hasher: Default::default(),
            by_wd: WdMap::default(),
            len: 1,
        }
    }

    fn node(&self, id: NodeId) -> &Node {
        let n = &self.nodes[id as usize];
        assert!(n.parent != DEAD, "live node id");
        n
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        let n = &mut self.nodes[id as usize];
        assert!(n.parent != DEAD, "live node id");
        n
    }

    /// Number of directories in the tree (the root included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of nodes with a watch descriptor.
    pub fn watched(&self) -> usize {
        self.by_wd.len
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.nodes
            .get(id as usize)
            .is_some_and(|n| n.parent != DEAD)
    }

    pub fn by_wd(&self, wd: i32) -> Option<NodeId> {
        self.by_wd.get(wd)
    }

    /// Drops `wd`'s entry if it is `id`'s.
    fn forget_wd(&mut self, wd: i32, id: NodeId) {
        self.by_wd.remove(wd, id);
    }

    pub fn wd(&self, id: NodeId) -> Option<i32> {
        let wd = self.node(id).wd;
        (wd != NO_WD).then_some(wd)
    }

    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        let p = self.node(id).parent;
        (p != NONE).then_some(p)
    }

    pub fn name(&self, id: NodeId) -> &[u8] {
        name_of(&self.names, self.node(id))
    }

    pub fn child(&self, id: NodeId, name: &[u8]) -> Option<NodeId> {
        let h = hash_of(&self.hasher, id, name);
        let (nodes, names) = (&self.nodes, &self.names);
        self.index
            .find(h, |&c| {
                let n = &nodes[c as usize];
                n.parent == id && name_of(names, n) == name
            })
            .copied()
    }

    pub fn children(&self, id: NodeId) -> impl Iterator<Item = (&[u8], NodeId)> {
        let mut cur = self.node(id).first_child;
        std::iter::from_fn(move || {
            if cur == NONE {
                return None;
            }
            let c = cur;
            cur = self.nodes[c as usize].next;
            Some((self.name(c), c))
        })
    }

    /// Associates a watch descriptor with a node (replacing any previous one).
    pub fn set_wd(&mut self, id: NodeId, wd: Option<i32>) {
        if let Some(old) = self.wd(id) {
            self.forget_wd(old, id);
        }
        self.node_mut(id).wd = wd.unwrap_or(NO_WD);
        if let Some(wd) = wd {
            self.by_wd.set(wd, id);
        }
    }

    /// Checks the tree's internal links (debug builds and tests): every child list entry
    /// is a live node naming that parent, the index finds every node under its parent
    /// and name, every watch descriptor maps back to its node, and the free list holds
    /// only dead slots.
    #[cfg(any(debug_assertions, test))]
    pub fn check(&self) -> Result<(), String> {
        let mut live = 0;
        for (i, n) in self.nodes.iter().enumerate() {
            if n.parent == DEAD {
                continue;
            }
            live += 1;
            let id = i as NodeId;
            let mut prev = NONE;
            let mut c = n.first_child;
            while c != NONE {
                let Some(child) = self.nodes.get(c as usize).filter(|n| n.parent != DEAD) else {
                    return Err(format!("node {id} has dead child {c}"));
                };
                if child.parent != id || child.prev != prev {
                    return Err(format!(
                        "node {id}: child {c} names parent {} and prev {} (expected {prev})",
                        child.parent, child.prev
                    ));
                }
                prev = c;
                c = child.next;
            }
            if id != ROOT {
                let name = name_of(&self.names, n);
                if self.child(n.parent, name) != Some(id) {
                    return Err(format!(
                        "node {id} {:?} not found under its parent {}",
                        String::from_utf8_lossy(name),
                        n.parent
                    ));
                }
            }
            if n.wd != NO_WD && self.by_wd(n.wd) != Some(id) {
                return Err(format!(
                    "node {id} has wd {} but by_wd says {:?}",
                    n.wd,
                    self.by_wd(n.wd)
                ));
            }
        }
        for f in &self.free {
            if self.nodes[*f as usize].parent != DEAD {
                return Err(format!("free slot {f} is live"));
            }
        }
        if live != self.len || self.index.len() + 1 != self.len {
            return Err(format!(
                "len {} but {live} live nodes and {} indexed",
                self.len,
                self.index.len()
            ));
        }
        Ok(())
    }

    /// Tests: damages the free list (a live slot listed as free), as a bug would.
    #[cfg(all(test, debug_assertions))]
    pub fn break_free_list(&mut self) {
        self.free.push(ROOT);
    }

    /// The path relative to the root, without a leading slash (the root is empty).
    pub fn path(&self, id: NodeId) -> Vec<u8> {
        let mut chain = Vec::new();
        let mut len = 0;
        let mut cur = id;
        while cur != ROOT {
            let n = self.node(cur);
            chain.push(cur);
            len += name_of(&self.names, n).len() + 1;
            cur = n.parent;
        }
        let mut out = Vec::with_capacity(len);
        for (i, id) in chain.iter().rev().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(self.name(*id));
        }
        out
    }

    /// Whether `id` is `ancestor` or below it.
    pub fn is_within(&self, mut id: NodeId, ancestor: NodeId) -> bool {
        loop {
            if id == ancestor {
                return true;
            }
            match self.parent(id) {
                Some(p) => id = p,
                None => return false,
            }
        }
    }

    /// Stores a name in the arena (compacting it first when half of it is garbage);
    /// returns its offset.
    fn store_name(&mut self, name: &[u8]) -> u32 {
        if self.garbage > 4096 && self.garbage * 2 > self.names.len() {
            self.compact();
        }
        let off = u32::try_from(self.names.len()).expect("name arena under 4 GiB");
        push_name(&mut self.names, name);
        off
    }

    /// The bytes `id`'s name takes in the arena.
    fn stored_len(&self, id: NodeId) -> usize {
        entry_at(&self.names, self.nodes[id as usize].name_off).1
    }

    /// Rewrites the arena with the live names only (hashes do not change: they are of
    /// the names' bytes, not of their places).
    fn compact(&mut self) {
        let mut names = Vec::with_capacity(self.names.len() - self.garbage);
        for n in self.nodes.iter_mut() {
            if n.parent == DEAD || n.parent == NONE {
                continue;
            }
            let off = names.len() as u32;
            push_name(&mut names, name_of(&self.names, n));
            n.name_off = off;
        }
        self.names = names;
        self.garbage = 0;
    }

    /// Links node `id` (its parent and name set) into its parent's list and the index.
    fn link(&mut self, id: NodeId) {
        let parent = self.nodes[id as usize].parent;
        let first = self.node(parent).first_child;
        if first != NONE {
            self.nodes[first as usize].prev = id;
        }
        let n = &mut self.nodes[id as usize];
        n.next = first;
        n.prev = NONE;
        self.node_mut(parent).first_child = id;
        let h = hash_of(&self.hasher, parent, self.name(id));
        let (nodes, names, hasher) = (&self.nodes, &self.names, &self.hasher);
        self.index.insert_unique(h, id, |&c| {
            let n = &nodes[c as usize];
            hash_of(hasher, n.parent, name_of(names, n))
        });
    }

    /// Takes node `id` out of its parent's list and the index.
    fn unlink(&mut self, id: NodeId) {
        let n = *self.node(id);
        if n.prev != NONE {
            self.nodes[n.prev as usize].next = n.next;
        } else {
            self.node_mut(n.parent).first_child = n.next;
        }
        if n.next != NONE {
            self.nodes[n.next as usize].prev = n.prev;
        }
        let h = hash_of(&self.hasher, n.parent, name_of(&self.names, &n));
        if let Ok(e) = self.index.find_entry(h, |&c| c == id) {
            e.remove();
        }
    }

    /// Adds a child directory node; an existing child of that name is removed first (its
    /// watch descriptors are returned so the caller can drop the kernel watches).
    pub fn insert(&mut self, parent: NodeId, name: &[u8], wd: Option<i32>) -> (NodeId, Vec<i32>) {
        let stale = match self.child(parent, name) {
            Some(old) => self.remove(old),
            None => Vec::new(),
        };
        let name_off = self.store_name(name);
        let node = Node {
            parent,
            first_child: NONE,
            next: NONE,
            prev: NONE,
            wd: NO_WD,
            name_off,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = node;
                id
            }
            None => {
                self.nodes.push(node);
                NodeId::try_from(self.nodes.len() - 1).expect("fewer than 4 billion dirs")
            }
        };
        self.len += 1;
        self.link(id);
        self.set_wd(id, wd);
        (id, stale)
    }

    /// Removes a node and its whole subtree; returns their watch descriptors.
    pub fn remove(&mut self, id: NodeId) -> Vec<i32> {
        assert_ne!(id, ROOT, "the root is never removed");
        self.unlink(id);
        let mut wds = Vec::new();
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            let n = self.nodes[cur as usize];
            if n.wd != NO_WD {
                self.forget_wd(n.wd, cur);
                wds.push(n.wd);
            }
            let mut c = n.first_child;
            while c != NONE {
                stack.push(c);
                let cn = self.nodes[c as usize];
                // Children below the removed node leave the index as well.
                let h = hash_of(&self.hasher, cn.parent, name_of(&self.names, &cn));
                if let Ok(e) = self.index.find_entry(h, |&x| x == c) {
                    e.remove();
                }
                c = cn.next;
            }
            self.garbage += self.stored_len(cur);
            self.nodes[cur as usize].parent = DEAD;
            self.free.push(cur);
            self.len -= 1;
        }
        wds
    }

    /// Moves a node (and so its subtree) to a new parent and name: O(1). A node already
    /// at the target name is removed first; its watch descriptors are returned.
    pub fn rename(&mut self, id: NodeId, new_parent: NodeId, new_name: &[u8]) -> Vec<i32> {
        assert!(
            !self.is_within(new_parent, id),
            "a directory cannot move below itself"
        );
        let stale = match self.child(new_parent, new_name) {
            Some(old) if old != id => self.remove(old),
            _ => Vec::new(),
        };
        self.unlink(id);
        let old_len = self.stored_len(id);
        let name_off = self.store_name(new_name);
        self.garbage += old_len;
        let n = self.node_mut(id);
        n.parent = new_parent;
        n.name_off = name_off;
        self.link(id);
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_compaction_and_children_list_in_both_directions() {
        let mut t = Tree::new();
        let (d, _) = t.insert(ROOT, b"dir", None);
        let mut ids = Vec::new();
        for i in 0..3000 {
            let (c, _) = t.insert(d, format!("child-{i:05}").as_bytes(), Some(i + 10));
            ids.push(c);
        }
        // Rename every child a few times: the arena fills with garbage and is compacted.
        for round in 0..4 {
            for (i, c) in ids.iter().enumerate() {
                t.rename(*c, d, format!("r{round}-{i:05}-renamed").as_bytes());
            }
        }
        t.check().unwrap();
        assert!(t.garbage * 2 <= t.names.len() + 8192);
        assert_eq!(t.child(d, b"r3-00042-renamed"), Some(ids[42]));
        assert_eq!(t.child(d, b"child-00042"), None);
        assert_eq!(t.children(d).count(), 3000);
        // Remove from the middle, the front and the back of the sibling list.
        for c in [ids[1500], ids[2999], ids[0]] {
            t.remove(c);
            t.check().unwrap();
        }
        assert_eq!(t.children(d).count(), 2997);
        assert_eq!(t.path(ids[7]), b"dir/r3-00007-renamed");
        assert_eq!(t.watched(), 2997);
    }

    #[test]
    fn nodes_stay_small_and_long_names_survive() {
        assert_eq!(std::mem::size_of::<Node>(), 24);
        let mut t = Tree::new();
        let long: Vec<u8> = (0..300).map(|i| b'a' + (i % 26) as u8).collect();
        let edge = vec![b'e'; 255];
        let (a, _) = t.insert(ROOT, &long, Some(1));
        let (b, _) = t.insert(a, &edge, Some(2));
        let (c, _) = t.insert(b, b"", None);
        t.check().unwrap();
        assert_eq!(t.name(a), &long[..]);
        assert_eq!(t.name(b), &edge[..]);
        assert_eq!(t.name(c), b"");
        assert_eq!(t.child(a, &edge), Some(b));
        // Enough renames to compact the arena around them.
        let (d, _) = t.insert(ROOT, b"d", Some(3));
        for i in 0..2000 {
            t.rename(d, ROOT, format!("d-{i}").as_bytes());
        }
        t.check().unwrap();
        assert_eq!(t.path(b), [&long[..], b"/", &edge[..]].concat());
        assert_eq!(t.path(d), b"d-1999");
    }

    #[test]
    fn a_shared_watch_descriptor_names_the_last_node_set() {
        // The same directory reached twice (a bind mount) gets the same descriptor.
        let mut t = Tree::new();
        let (a, _) = t.insert(ROOT, b"a", Some(7));
        let (b, _) = t.insert(ROOT, b"b", Some(7));
        assert_eq!(t.by_wd(7), Some(b));
        t.remove(a);
        assert_eq!(t.by_wd(7), Some(b), "removing the other node keeps it");
        t.set_wd(b, Some(8));
        assert_eq!(t.by_wd(7), None);
        assert_eq!(t.by_wd(8), Some(b));
        assert_eq!(t.watched(), 1);
    }

    /// Watch descriptors come in ascending order: a page of them costs 4 bytes each, and
    /// goes when its last descriptor does (years of directories made and removed leave
    /// nothing behind).
    #[test]
    fn watch_descriptor_pages_are_freed_when_empty() {
        let mut t = Tree::new();
        let mut ids = Vec::new();
        for wd in 1..=3000 {
            let (c, _) = t.insert(ROOT, format!("d{wd}").as_bytes(), Some(wd));
            ids.push(c);
        }
        assert_eq!(t.by_wd.pages.len(), 3);
        assert_eq!(t.watched(), 3000);
        for (i, c) in ids.iter().enumerate().take(2047) {
            t.remove(*c);
            assert_eq!(t.by_wd(i as i32 + 1), None);
        }
        t.check().unwrap();
        assert_eq!(t.by_wd.pages.len(), 1, "the first two pages are empty");
        assert_eq!(t.by_wd(2048), Some(ids[2047]));
        assert_eq!(t.watched(), 953);
        // Far descriptors (the kernel's counter after much churn) and a negative one.
        let (far, _) = t.insert(ROOT, b"far", Some(i32::MAX));
        assert_eq!(t.by_wd(i32::MAX), Some(far));
        assert_eq!(t.by_wd(-5), None);
        t.remove(far);
        assert_eq!(t.by_wd.pages.len(), 1);
    }

    #[test]
    fn paths_follow_renames() {
        let mut t = Tree::new();
        let (a, _) = t.insert(ROOT, b"a", Some(1));
        let (b, _) = t.insert(a, b"b", Some(2));
        let (c, _) = t.insert(b, b"c", Some(3));
        assert_eq!(t.path(c), b"a/b/c");
        assert_eq!(t.path(ROOT), b"");
        let (x, _) = t.insert(ROOT, b"x", Some(4));
        assert!(t.rename(b, x, b"bb").is_empty());
        assert_eq!(t.path(c), b"x/bb/c");
        assert_eq!(t.child(a, b"b"), None);
        assert_eq!(t.by_wd(3), Some(c));
    }

    #[test]
    fn recreated_name_is_a_new_node() {
        let mut t = Tree::new();
        let (a, _) = t.insert(ROOT, b"a", Some(1));
        t.rename(a, ROOT, b"b");
        let (a2, stale) = t.insert(ROOT, b"a", Some(2));
        assert!(stale.is_empty());
        assert_ne!(a, a2);
        assert_eq!(t.path(a), b"b");
        assert_eq!(t.path(a2), b"a");
        assert_eq!(t.by_wd(2), Some(a2));
    }

    #[test]
    fn remove_returns_all_watches_of_the_subtree() {
        let mut t = Tree::new();
        let (a, _) = t.insert(ROOT, b"a", Some(1));
        let (b, _) = t.insert(a, b"b", Some(2));
        t.insert(b, b"c", None);
        t.insert(a, b"d", Some(4));
        assert_eq!(t.len(), 5);
        let mut wds = t.remove(a);
        wds.sort();
        assert_eq!(wds, [1, 2, 4]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.by_wd(2), None);
        assert_eq!(t.child(ROOT, b"a"), None);
        // slots are reused
        let (n, _) = t.insert(ROOT, b"n", Some(9));
        assert!(n <= 4);
        assert_eq!(t.path(n), b"n");
    }

    #[test]
    fn rename_over_an_existing_directory_replaces_it() {
        let mut t = Tree::new();
        let (a, _) = t.insert(ROOT, b"a", Some(1));
        let (b, _) = t.insert(ROOT, b"b", Some(2));
        t.insert(b, b"inner", Some(3));
        let mut stale = t.rename(a, ROOT, b"b");
        stale.sort();
        assert_eq!(stale, [2, 3]);
        assert_eq!(t.child(ROOT, b"b"), Some(a));
        assert_eq!(t.by_wd(1), Some(a));
        assert_eq!(t.len(), 2);
    }
}
