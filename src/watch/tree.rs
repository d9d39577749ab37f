/*!
The watched directories as a tree of nodes `{parent, name}`.

A directory's path is never stored; it is rebuilt from the chain of parents when needed.
So renaming or moving a directory is O(1) (change one node's parent and name), and a
stale path can never survive a rename: the bug where a re-created directory with an old
name looked "already watched" cannot happen, because nothing is keyed by path.

Nodes live in a slab (`Vec` plus a free list) and are addressed by `u32` ids; each node
keeps its children by name, which is what pairing an inotify event `(wd, name)` with a
subdirectory needs.
*/

use std::collections::HashMap;

pub type NodeId = u32;

/// The root node's id.
pub const ROOT: NodeId = 0;
const NO_PARENT: NodeId = u32::MAX;

#[derive(Debug)]
struct Node {
    parent: NodeId,
    name: Box<[u8]>,
    wd: Option<i32>,
    children: HashMap<Box<[u8]>, NodeId>,
}

#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Option<Node>>,
    free: Vec<NodeId>,
    by_wd: HashMap<i32, NodeId>,
    len: usize,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    /// A tree holding only the root (not yet watched).
    pub fn new() -> Self {
        Tree {
            nodes: vec![Some(Node {
                parent: NO_PARENT,
                name: Box::default(),
                wd: None,
                children: HashMap::new(),
            })],
            free: Vec::new(),
            by_wd: HashMap::new(),
            len: 1,
        }
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes[id as usize].as_ref().expect("live node id")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id as usize].as_mut().expect("live node id")
    }

    /// Number of directories in the tree (the root included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.nodes.get(id as usize).is_some_and(|n| n.is_some())
    }

    pub fn by_wd(&self, wd: i32) -> Option<NodeId> {
        self.by_wd.get(&wd).copied()
    }

    pub fn wd(&self, id: NodeId) -> Option<i32> {
        self.node(id).wd
    }

    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        let p = self.node(id).parent;
        (p != NO_PARENT).then_some(p)
    }

    pub fn name(&self, id: NodeId) -> &[u8] {
        &self.node(id).name
    }

    pub fn child(&self, id: NodeId, name: &[u8]) -> Option<NodeId> {
        self.node(id).children.get(name).copied()
    }

    pub fn children(&self, id: NodeId) -> impl Iterator<Item = (&[u8], NodeId)> {
        self.node(id).children.iter().map(|(k, v)| (&**k, *v))
    }

    /// Associates a watch descriptor with a node (replacing any previous one).
    pub fn set_wd(&mut self, id: NodeId, wd: Option<i32>) {
        if let Some(old) = self.node(id).wd {
            if self.by_wd.get(&old) == Some(&id) {
                self.by_wd.remove(&old);
            }
        }
        self.node_mut(id).wd = wd;
        if let Some(wd) = wd {
            self.by_wd.insert(wd, id);
        }
    }

    /// Checks the tree's internal links (debug builds and tests): every child entry
    /// points to a live node that names the same parent and name, every watch
    /// descriptor maps back to its node, and the free list holds only dead slots.
    pub fn check(&self) -> Result<(), String> {
        let mut live = 0;
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(n) = n else { continue };
            live += 1;
            let id = i as NodeId;
            for (name, c) in &n.children {
                let Some(Some(child)) = self.nodes.get(*c as usize) else {
                    return Err(format!("node {id} has dead child {c} under {name:?}"));
                };
                if child.parent != id || *child.name != **name {
                    return Err(format!(
                        "node {id}: child entry {name:?} -> {c}, but {c} is {:?} under {}",
                        child.name, child.parent
                    ));
                }
            }
            if id != ROOT {
                let p = self.nodes.get(n.parent as usize).and_then(|p| p.as_ref());
                if p.and_then(|p| p.children.get(&n.name)) != Some(&id) {
                    return Err(format!(
                        "node {id} {:?} not listed by its parent {}",
                        n.name, n.parent
                    ));
                }
            }
            if let Some(wd) = n.wd {
                if self.by_wd.get(&wd) != Some(&id) {
                    return Err(format!(
                        "node {id} has wd {wd} but by_wd says {:?}",
                        self.by_wd.get(&wd)
                    ));
                }
            }
        }
        for f in &self.free {
            if self.nodes[*f as usize].is_some() {
                return Err(format!("free slot {f} is live"));
            }
        }
        if live != self.len {
            return Err(format!("len {} but {live} live nodes", self.len));
        }
        Ok(())
    }

    /// The path relative to the root, without a leading slash (the root is empty).
    pub fn path(&self, id: NodeId) -> Vec<u8> {
        let mut chain = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            let n = self.node(cur);
            chain.push(cur);
            cur = n.parent;
        }
        let mut out = Vec::new();
        for (i, id) in chain.iter().rev().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(&self.node(*id).name);
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

    /// Adds a child directory node; an existing child of that name is removed first (its
    /// watch descriptors are returned so the caller can drop the kernel watches).
    pub fn insert(&mut self, parent: NodeId, name: &[u8], wd: Option<i32>) -> (NodeId, Vec<i32>) {
        let stale = match self.child(parent, name) {
            Some(old) => self.remove(old),
            None => Vec::new(),
        };
        let node = Node {
            parent,
            name: name.into(),
            wd: None,
            children: HashMap::new(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Some(node);
                id
            }
            None => {
                self.nodes.push(Some(node));
                (self.nodes.len() - 1) as NodeId
            }
        };
        self.len += 1;
        self.node_mut(parent).children.insert(name.into(), id);
        self.set_wd(id, wd);
        (id, stale)
    }

    /// Removes a node and its whole subtree; returns their watch descriptors.
    pub fn remove(&mut self, id: NodeId) -> Vec<i32> {
        assert_ne!(id, ROOT, "the root is never removed");
        let n = self.node(id);
        let (parent, name) = (n.parent, n.name.clone());
        let p = self.node_mut(parent);
        if p.children.get(&name) == Some(&id) {
            p.children.remove(&name);
        }
        let mut wds = Vec::new();
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            let n = self.nodes[cur as usize].take().expect("live node id");
            if let Some(wd) = n.wd {
                if self.by_wd.get(&wd) == Some(&cur) {
                    self.by_wd.remove(&wd);
                }
                wds.push(wd);
            }
            stack.extend(n.children.values());
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
        let n = self.node(id);
        let (old_parent, old_name) = (n.parent, n.name.clone());
        let p = self.node_mut(old_parent);
        if p.children.get(&old_name) == Some(&id) {
            p.children.remove(&old_name);
        }
        let n = self.node_mut(id);
        n.parent = new_parent;
        n.name = new_name.into();
        self.node_mut(new_parent)
            .children
            .insert(new_name.into(), id);
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
