//! The image graph: every concrete image has exactly one parent (a base or
//! another image), so the catalog is a forest. Levels put parents before
//! children; the images of one level are independent of each other.

use std::collections::BTreeSet;

use crate::catalog::{Catalog, ParentRef};

/// Parent cycles, each as the list of its members starting from the first
/// image (in catalog order) that is on it.
pub fn cycles(catalog: &Catalog) -> Vec<Vec<String>> {
    let index = |name: &str| catalog.position(name);
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; catalog.images.len()];
    let mut out = Vec::new();
    for start in 0..catalog.images.len() {
        let mut path = Vec::new();
        let mut cur = Some(start);
        while let Some(i) = cur {
            match state[i] {
                2 => break,
                1 => {
                    let from = path.iter().position(|&p| p == i).unwrap_or(0);
                    out.push(
                        path[from..]
                            .iter()
                            .map(|&p: &usize| catalog.images[p].name.clone())
                            .collect(),
                    );
                    break;
                }
                _ => {
                    state[i] = 1;
                    path.push(i);
                    cur = match &catalog.images[i].parent {
                        ParentRef::Image(p) => index(p),
                        ParentRef::Base(_) => None,
                    };
                }
            }
        }
        for p in path {
            state[p] = 2;
        }
    }
    out
}

/// A checked catalog's build order.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Index of each image's catalog parent (`None` for images on a base).
    pub parent: Vec<Option<usize>>,
    /// Depth of each image: 0 on a base, parent's level + 1 otherwise.
    pub level: Vec<usize>,
    /// Image indices per level, in catalog order within a level.
    pub levels: Vec<Vec<usize>>,
}

impl Graph {
    /// Build the graph of a catalog that passed validation (no cycles, no
    /// unknown parents); an unknown parent is treated as a base.
    pub fn new(catalog: &Catalog) -> Graph {
        let n = catalog.images.len();
        let parent: Vec<Option<usize>> = catalog
            .images
            .iter()
            .map(|img| match &img.parent {
                ParentRef::Image(p) => catalog.position(p),
                ParentRef::Base(_) => None,
            })
            .collect();
        let mut level = vec![usize::MAX; n];
        for i in 0..n {
            let mut chain = Vec::new();
            let mut cur = Some(i);
            while let Some(c) = cur {
                if level[c] != usize::MAX || chain.len() > n {
                    break;
                }
                chain.push(c);
                cur = parent[c];
            }
            let mut l = cur.map_or(0, |c| level[c].saturating_add(1));
            if cur.is_some_and(|c| level[c] == usize::MAX) {
                l = 0;
            }
            for &c in chain.iter().rev() {
                level[c] = l;
                l += 1;
            }
        }
        let depth = level.iter().copied().max().map_or(0, |m| m + 1);
        let mut levels = vec![Vec::new(); depth];
        for (i, &l) in level.iter().enumerate() {
            levels[l].push(i);
        }
        Graph {
            parent,
            level,
            levels,
        }
    }

    /// Images in build order (parents first).
    pub fn order(&self) -> impl Iterator<Item = usize> + '_ {
        self.levels.iter().flatten().copied()
    }

    /// `i` and every image below it.
    pub fn descendants(&self, i: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::from([i]);
        for j in self.order() {
            if let Some(p) = self.parent[j]
                && out.contains(&p)
            {
                out.insert(j);
            }
        }
        out
    }

    /// `i` and every image above it, nearest first.
    pub fn ancestors(&self, i: usize) -> Vec<usize> {
        let mut out = vec![i];
        let mut cur = self.parent[i];
        while let Some(p) = cur {
            if out.contains(&p) {
                break;
            }
            out.push(p);
            cur = self.parent[p];
        }
        out
    }
}
