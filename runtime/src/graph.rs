//! The dependency graph of loaded plugins: validation before a load, load order and dependents.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::error::{Error, Result};
use crate::manifest::DependencySpec;

/// One loaded plugin as the graph sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PluginNode {
    version: semver::Version,
    dependencies: Vec<DependencySpec>,
}

/// The loaded plugins and what each depends on.
///
/// Nodes are kept in a `BTreeMap` so that every order the graph returns is deterministic.
#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    nodes: BTreeMap<String, PluginNode>,
}

impl DependencyGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a plugin, replacing an existing node of that name (a reload). It does not validate:
    /// call [`Self::validate`] first.
    pub fn insert(
        &mut self,
        name: &str,
        version: semver::Version,
        dependencies: Vec<DependencySpec>,
    ) {
        self.nodes.insert(
            name.to_string(),
            PluginNode {
                version,
                dependencies,
            },
        );
    }

    pub fn remove(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    /// The version of a loaded plugin.
    pub fn version(&self, name: &str) -> Option<&semver::Version> {
        self.nodes.get(name).map(|node| &node.version)
    }

    /// The declared dependencies of a loaded plugin.
    pub fn dependencies(&self, name: &str) -> Option<&[DependencySpec]> {
        self.nodes
            .get(name)
            .map(|node| node.dependencies.as_slice())
    }

    /// Names of every loaded plugin, sorted.
    pub fn names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Checks that a plugin (new, or replacing the node of the same name on reload) could be
    /// added: [`Error::SelfDependency`], then [`Error::DependencyNotFound`] for a dependency that
    /// is not loaded, then [`Error::DependencyVersionMismatch`] for an exact version that differs,
    /// then [`Error::CircularDependency`] if the new edges close a cycle. A cycle is possible on
    /// reload, when a loaded plugin depends on this one and the new dependencies reach back to it;
    /// its path starts and ends with `name`, e.g. `["a", "b", "a"]`.
    ///
    /// Loaded plugins that pin this plugin to another exact version are not checked here; see
    /// [`Self::validate_version_change`].
    pub fn validate(
        &self,
        name: &str,
        version: &semver::Version,
        dependencies: &[DependencySpec],
    ) -> Result<()> {
        tracing::trace!(plugin = name, %version, "validating dependencies");
        if dependencies
            .iter()
            .any(|dependency| dependency.name == name)
        {
            return Err(Error::SelfDependency {
                plugin: name.to_string(),
            });
        }
        for dependency in dependencies {
            if !self.nodes.contains_key(&dependency.name) {
                return Err(Error::DependencyNotFound {
                    plugin: name.to_string(),
                    dependency: dependency.name.clone(),
                });
            }
        }
        for dependency in dependencies {
            let (Some(required), Some(loaded)) =
                (&dependency.version, self.nodes.get(&dependency.name))
            else {
                continue;
            };
            if *required != loaded.version {
                return Err(Error::DependencyVersionMismatch {
                    plugin: name.to_string(),
                    dependency: dependency.name.clone(),
                    required: required.to_string(),
                    found: loaded.version.to_string(),
                });
            }
        }
        // The graph with `name` replaced: its own edges are the new ones, every other node keeps
        // its edges. Only a cycle through `name` can be new, so searching from its dependencies
        // back to it is enough.
        let first_steps = dependencies
            .iter()
            .map(|dependency| dependency.name.as_str());
        let next_steps = |node| {
            self.nodes
                .get(node)
                .into_iter()
                .flat_map(|plugin: &PluginNode| &plugin.dependencies)
                .map(|dependency| dependency.name.as_str())
        };
        if let Some(path) = shortest_cycle(name, first_steps, next_steps) {
            return Err(Error::CircularDependency { path });
        }
        Ok(())
    }

    /// Checks that loaded plugins pinning `name` to an exact version accept `version`; useful
    /// before a reload that changes the version. The first plugin (by name) whose requirement
    /// differs is reported as a [`Error::DependencyVersionMismatch`] of that plugin.
    pub fn validate_version_change(&self, name: &str, version: &semver::Version) -> Result<()> {
        for (dependent, node) in &self.nodes {
            for dependency in &node.dependencies {
                match &dependency.version {
                    Some(required) if dependency.name == name && required != version => {
                        return Err(Error::DependencyVersionMismatch {
                            plugin: dependent.clone(),
                            dependency: name.to_string(),
                            required: required.to_string(),
                            found: version.to_string(),
                        });
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Names of loaded plugins that declare a dependency on `name`, sorted.
    pub fn direct_dependents(&self, name: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, node)| depends_on(node, name))
            .map(|(dependent, _)| dependent.clone())
            .collect()
    }

    /// All plugins that depend on `name` directly or transitively, in the order they must be
    /// unloaded (a plugin always before anything it depends on; ties broken by name), without
    /// `name` itself.
    pub fn dependents_in_unload_order(&self, name: &str) -> Vec<String> {
        let mut dependents: BTreeSet<&str> = BTreeSet::new();
        let mut queue: VecDeque<&str> = VecDeque::from([name]);
        while let Some(current) = queue.pop_front() {
            for (dependent, node) in &self.nodes {
                if dependent != name && depends_on(node, current) && dependents.insert(dependent) {
                    queue.push_back(dependent);
                }
            }
        }
        // To unload, a plugin's dependents must go before it: each edge "a depends on b" puts
        // a before b.
        let mut edges = Vec::new();
        for dependent in &dependents {
            if let Some(node) = self.nodes.get(*dependent) {
                for dependency in &node.dependencies {
                    if let Some(dependency) = dependents.get(dependency.name.as_str()) {
                        edges.push((*dependent, *dependency));
                    }
                }
            }
        }
        order_respecting_edges(&dependents, &edges)
    }

    /// Every node in an order where each plugin comes after its dependencies (ties broken by
    /// name). Shutdown unloads in the reverse of this order.
    pub fn load_order(&self) -> Vec<String> {
        let names: BTreeSet<&str> = self.nodes.keys().map(String::as_str).collect();
        let mut edges = Vec::new();
        for (name, node) in &self.nodes {
            for dependency in &node.dependencies {
                if let Some(dependency) = names.get(dependency.name.as_str()) {
                    edges.push((*dependency, name.as_str()));
                }
            }
        }
        order_respecting_edges(&names, &edges)
    }
}

fn depends_on(node: &PluginNode, name: &str) -> bool {
    node.dependencies
        .iter()
        .any(|dependency| dependency.name == name)
}

/// Orders `nodes` so that for each edge `(before, after)` `before` comes first; see
/// [`place_respecting_edges`]. Nodes caught in a cycle are appended in name order so that the
/// result still lists every node, because callers such as shutdown must reach every plugin even
/// in a graph that should not exist.
fn order_respecting_edges(nodes: &BTreeSet<&str>, edges: &[(&str, &str)]) -> Vec<String> {
    let (placed, unplaced) = place_respecting_edges(nodes, edges);
    placed
        .into_iter()
        .chain(unplaced)
        .map(str::to_string)
        .collect()
}

/// Kahn's algorithm, always taking the smallest ready name so that the order is deterministic.
/// Returns the placed nodes in order, and the nodes that could not be placed (those in a cycle
/// and those waiting on one) in name order. Edges from a node to itself and edges touching
/// nodes outside `nodes` are ignored.
fn place_respecting_edges<'a>(
    nodes: &BTreeSet<&'a str>,
    edges: &[(&'a str, &'a str)],
) -> (Vec<&'a str>, Vec<&'a str>) {
    let distinct_edges: BTreeSet<(&str, &str)> = edges
        .iter()
        .copied()
        .filter(|(before, after)| {
            before != after && nodes.contains(before) && nodes.contains(after)
        })
        .collect();
    let mut waiting_on: BTreeMap<&str, usize> = nodes.iter().map(|node| (*node, 0)).collect();
    let mut followers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (before, after) in &distinct_edges {
        if let Some(count) = waiting_on.get_mut(after) {
            *count += 1;
        }
        followers.entry(before).or_default().push(after);
    }
    let mut ready: BTreeSet<&str> = waiting_on
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(node, _)| *node)
        .collect();
    let mut placed: Vec<&str> = Vec::with_capacity(nodes.len());
    while let Some(node) = ready.pop_first() {
        placed.push(node);
        for follower in followers.get(node).into_iter().flatten() {
            if let Some(count) = waiting_on.get_mut(follower) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    ready.insert(follower);
                }
            }
        }
    }
    let unplaced = waiting_on
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(node, _)| node)
        .collect();
    (placed, unplaced)
}

/// The shortest path from `start` back to itself, given the nodes `start` points to and a way to
/// find where any other node points. Breadth-first, so the reported cycle is the shortest one
/// and, with steps visited in declared order, always the same one. The path starts and ends
/// with `start`.
fn shortest_cycle<'a, NextSteps, Steps>(
    start: &'a str,
    first_steps: impl IntoIterator<Item = &'a str>,
    next_steps: NextSteps,
) -> Option<Vec<String>>
where
    NextSteps: Fn(&'a str) -> Steps,
    Steps: IntoIterator<Item = &'a str>,
{
    // Each visited node remembers the node it was reached from; `start` has no entry.
    let mut reached_from: BTreeMap<&'a str, Option<&'a str>> = BTreeMap::new();
    let mut queue: VecDeque<&'a str> = VecDeque::new();
    for step in first_steps {
        if step == start {
            return Some(vec![start.to_string(), start.to_string()]);
        }
        if !reached_from.contains_key(step) {
            reached_from.insert(step, None);
            queue.push_back(step);
        }
    }
    while let Some(current) = queue.pop_front() {
        for step in next_steps(current) {
            if step == start {
                let mut reversed_path = vec![start, current];
                let mut cursor = current;
                while let Some(Some(previous)) = reached_from.get(cursor) {
                    reversed_path.push(previous);
                    cursor = previous;
                }
                reversed_path.push(start);
                return Some(
                    reversed_path
                        .iter()
                        .rev()
                        .map(|node| node.to_string())
                        .collect(),
                );
            }
            if !reached_from.contains_key(step) {
                reached_from.insert(step, Some(current));
                queue.push_back(step);
            }
        }
    }
    None
}

/// A candidate for batch loading (directory scan): name, version and dependencies from its
/// manifest, plus an opaque index the caller uses to find its file again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    pub name: String,
    pub version: semver::Version,
    pub dependencies: Vec<DependencySpec>,
}

/// Plans a batch load against the already-loaded graph.
///
/// Returns the candidates' indices in an order where dependencies come first (ties broken by
/// name), and `(index, error)` for candidates that can never load:
/// - candidates sharing a name with another candidate, all of them
///   ([`Error::InvalidPluginFormat`] "two files declare plugin 'x'"), since there is no telling
///   which file the operator meant;
/// - candidates that depend on themselves ([`Error::SelfDependency`]);
/// - members of a dependency cycle among candidates ([`Error::CircularDependency`], with a path
///   starting and ending at that member).
///
/// Candidates that depend on a refused one are still put in the order: their load then fails
/// with [`Error::DependencyNotFound`], which the caller reports. Missing dependencies are not
/// reported here for the same reason. `loaded` does not change the plan: loaded plugins cannot
/// depend on a not-yet-loaded candidate, so they cannot take part in a cycle among candidates,
/// and a candidate whose name is already loaded is left for its own load to refuse.
pub fn plan_batch_load(
    loaded: &DependencyGraph,
    candidates: &[Candidate],
) -> (Vec<usize>, Vec<(usize, Error)>) {
    tracing::debug!(
        loaded = loaded.len(),
        candidates = candidates.len(),
        "planning a batch load"
    );
    let mut refused: Vec<(usize, Error)> = Vec::new();

    let mut candidates_by_name: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for candidate in candidates {
        candidates_by_name
            .entry(candidate.name.as_str())
            .or_default()
            .push(candidate);
    }
    // Candidates that may still load, by their (now unique) name.
    let mut plannable: BTreeMap<&str, &Candidate> = BTreeMap::new();
    for (name, same_name) in &candidates_by_name {
        match same_name.as_slice() {
            [candidate] => {
                if candidate
                    .dependencies
                    .iter()
                    .any(|dependency| dependency.name == *name)
                {
                    refused.push((
                        candidate.index,
                        Error::SelfDependency {
                            plugin: name.to_string(),
                        },
                    ));
                } else {
                    plannable.insert(name, candidate);
                }
            }
            _ => {
                let count = match same_name.len() {
                    2 => "two".to_string(),
                    count => count.to_string(),
                };
                for candidate in same_name {
                    refused.push((
                        candidate.index,
                        Error::invalid_format(format!("{count} files declare plugin '{name}'")),
                    ));
                }
            }
        }
    }
    // Edges between plannable candidates only: a dependency on anything else (loaded, missing or
    // refused) cannot be part of a cycle among candidates and does not constrain the order.
    let edges_by_name: BTreeMap<&str, Vec<&str>> = plannable
        .iter()
        .map(|(name, candidate)| {
            let dependencies = candidate
                .dependencies
                .iter()
                .map(|dependency| dependency.name.as_str())
                .filter(|dependency| plannable.contains_key(dependency))
                .collect();
            (*name, dependencies)
        })
        .collect();
    let candidate_edges = |name| edges_by_name.get(name).cloned().unwrap_or_default();

    // Kahn's algorithm places every candidate not in or behind a cycle; only the rest can be
    // cycle members, so only they need the (more costly) search for a path back to themselves.
    let names: BTreeSet<&str> = plannable.keys().copied().collect();
    let edges: Vec<(&str, &str)> = edges_by_name
        .iter()
        .flat_map(|(name, dependencies)| {
            dependencies
                .iter()
                .map(move |dependency| (*dependency, *name))
        })
        .collect();
    let (_, unplaced) = place_respecting_edges(&names, &edges);
    let mut cycle_members: BTreeSet<&str> = BTreeSet::new();
    for name in unplaced {
        if let Some(path) = shortest_cycle(name, candidate_edges(name), candidate_edges) {
            cycle_members.insert(name);
            if let Some(candidate) = plannable.get(name) {
                refused.push((candidate.index, Error::CircularDependency { path }));
            }
        }
    }

    let remaining: BTreeSet<&str> = names.difference(&cycle_members).copied().collect();
    let order = order_respecting_edges(&remaining, &edges)
        .iter()
        .filter_map(|name| {
            plannable
                .get(name.as_str())
                .map(|candidate| candidate.index)
        })
        .collect();
    refused.sort_by_key(|(index, _)| *index);
    (order, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str) -> semver::Version {
        semver::Version::parse(text).expect("test versions are valid")
    }

    fn dependencies(texts: &[&str]) -> Vec<DependencySpec> {
        texts
            .iter()
            .map(|text| DependencySpec::parse(text).expect("test dependencies are valid"))
            .collect()
    }

    /// A graph from `(name, dependencies)` pairs, every plugin at version 1.0.0.
    fn graph(plugins: &[(&str, &[&str])]) -> DependencyGraph {
        let mut graph = DependencyGraph::new();
        for (name, plugin_dependencies) in plugins {
            graph.insert(name, version("1.0.0"), dependencies(plugin_dependencies));
        }
        graph
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn insert_remove_and_contains_track_nodes() {
        let mut graph = DependencyGraph::new();
        assert!(graph.is_empty());
        graph.insert("users", version("1.0.0"), Vec::new());
        assert!(graph.contains("users"));
        assert_eq!(graph.version("users"), Some(&version("1.0.0")));
        graph.insert("users", version("2.0.0"), dependencies(&["audit"]));
        assert_eq!(graph.len(), 1);
        assert_eq!(graph.version("users"), Some(&version("2.0.0")));
        assert_eq!(
            graph.dependencies("users"),
            Some(dependencies(&["audit"]).as_slice())
        );
        graph.remove("users");
        assert!(!graph.contains("users"));
        graph.remove("never-there");
        assert!(graph.is_empty());
    }

    #[test]
    fn validate_accepts_satisfied_dependencies() {
        let graph = graph(&[("users", &[]), ("audit", &[])]);
        assert_eq!(
            graph.validate(
                "orders",
                &version("1.0.0"),
                &dependencies(&["users", "audit@1.0.0"])
            ),
            Ok(())
        );
        assert_eq!(graph.validate("lonely", &version("1.0.0"), &[]), Ok(()));
    }

    #[test]
    fn validate_refuses_self_dependency_first() {
        let graph = DependencyGraph::new();
        assert_eq!(
            graph.validate(
                "orders",
                &version("1.0.0"),
                &dependencies(&["missing", "orders"])
            ),
            Err(Error::SelfDependency {
                plugin: "orders".to_string()
            })
        );
    }

    #[test]
    fn validate_refuses_missing_dependencies() {
        let graph = graph(&[("users", &[])]);
        assert_eq!(
            graph.validate(
                "orders",
                &version("1.0.0"),
                &dependencies(&["users", "billing"])
            ),
            Err(Error::DependencyNotFound {
                plugin: "orders".to_string(),
                dependency: "billing".to_string()
            })
        );
    }

    #[test]
    fn validate_reports_missing_before_version_mismatch() {
        let graph = graph(&[("users", &[])]);
        assert!(matches!(
            graph.validate(
                "orders",
                &version("1.0.0"),
                &dependencies(&["users@2.0.0", "billing"])
            ),
            Err(Error::DependencyNotFound { .. })
        ));
    }

    #[test]
    fn validate_refuses_a_different_exact_version() {
        let graph = graph(&[("users", &[])]);
        assert_eq!(
            graph.validate("orders", &version("1.0.0"), &dependencies(&["users@1.4.0"])),
            Err(Error::DependencyVersionMismatch {
                plugin: "orders".to_string(),
                dependency: "users".to_string(),
                required: "1.4.0".to_string(),
                found: "1.0.0".to_string()
            })
        );
    }

    #[test]
    fn validate_refuses_a_reload_that_closes_a_cycle() {
        // b depends on a; reloading a with a dependency on b closes a -> b -> a.
        let graph = graph(&[("a", &[]), ("b", &["a"])]);
        assert_eq!(
            graph.validate("a", &version("1.1.0"), &dependencies(&["b"])),
            Err(Error::CircularDependency {
                path: names(&["a", "b", "a"])
            })
        );
    }

    #[test]
    fn validate_reports_the_shortest_cycle_path() {
        // c -> b -> a and d -> a; reloading a with dependencies on c and d: shortest is a -> d -> a.
        let graph = graph(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &["a"])]);
        assert_eq!(
            graph.validate("a", &version("1.0.0"), &dependencies(&["c", "d"])),
            Err(Error::CircularDependency {
                path: names(&["a", "d", "a"])
            })
        );
        assert_eq!(
            graph.validate("a", &version("1.0.0"), &dependencies(&["c"])),
            Err(Error::CircularDependency {
                path: names(&["a", "c", "b", "a"])
            })
        );
    }

    #[test]
    fn validate_accepts_a_reload_that_keeps_the_graph_acyclic() {
        let graph = graph(&[("a", &["c"]), ("b", &["a"]), ("c", &[])]);
        // a used to depend on c; its new version drops that and still closes no cycle.
        assert_eq!(graph.validate("a", &version("2.0.0"), &[]), Ok(()));
        // Diamond shapes are not cycles.
        let diamond = graph_with_diamond();
        assert_eq!(
            diamond.validate("top", &version("1.0.0"), &dependencies(&["left", "right"])),
            Ok(())
        );
    }

    fn graph_with_diamond() -> DependencyGraph {
        graph(&[("base", &[]), ("left", &["base"]), ("right", &["base"])])
    }

    #[test]
    fn validate_version_change_checks_pinned_dependents() {
        let mut graph = graph(&[("users", &[])]);
        graph.insert("orders", version("1.0.0"), dependencies(&["users@1.0.0"]));
        graph.insert("audit", version("1.0.0"), dependencies(&["users"]));
        assert_eq!(
            graph.validate_version_change("users", &version("1.0.0")),
            Ok(())
        );
        assert_eq!(
            graph.validate_version_change("users", &version("2.0.0")),
            Err(Error::DependencyVersionMismatch {
                plugin: "orders".to_string(),
                dependency: "users".to_string(),
                required: "1.0.0".to_string(),
                found: "2.0.0".to_string()
            })
        );
    }

    #[test]
    fn direct_dependents_are_sorted_and_direct_only() {
        let graph = graph(&[
            ("base", &[]),
            ("zeta", &["base"]),
            ("alpha", &["base"]),
            ("top", &["alpha"]),
        ]);
        assert_eq!(graph.direct_dependents("base"), names(&["alpha", "zeta"]));
        assert_eq!(graph.direct_dependents("top"), Vec::<String>::new());
        assert_eq!(graph.direct_dependents("unknown"), Vec::<String>::new());
    }

    #[test]
    fn dependents_unload_before_what_they_depend_on() {
        // top depends on left and right, both depend on base; extra depends on top.
        let mut graph = graph_with_diamond();
        graph.insert("top", version("1.0.0"), dependencies(&["left", "right"]));
        graph.insert("extra", version("1.0.0"), dependencies(&["top"]));
        graph.insert("unrelated", version("1.0.0"), Vec::new());
        assert_eq!(
            graph.dependents_in_unload_order("base"),
            names(&["extra", "top", "left", "right"])
        );
        assert_eq!(graph.dependents_in_unload_order("top"), names(&["extra"]));
        assert_eq!(
            graph.dependents_in_unload_order("extra"),
            Vec::<String>::new()
        );
        assert_eq!(
            graph.dependents_in_unload_order("unknown"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn dependents_order_puts_a_dependent_before_its_dependency_even_against_name_order() {
        // "a" depends on "b", and both depend on "base": "a" must go first; "b" then.
        let graph = graph(&[("base", &[]), ("b", &["base"]), ("a", &["b", "base"])]);
        assert_eq!(graph.dependents_in_unload_order("base"), names(&["a", "b"]));
        let graph = graph_reversed_names();
        assert_eq!(graph.dependents_in_unload_order("base"), names(&["b", "a"]));
    }

    fn graph_reversed_names() -> DependencyGraph {
        graph(&[("base", &[]), ("a", &["base"]), ("b", &["a", "base"])])
    }

    #[test]
    fn load_order_puts_dependencies_first_with_ties_by_name() {
        let mut graph = graph_with_diamond();
        graph.insert("top", version("1.0.0"), dependencies(&["right", "left"]));
        graph.insert("aardvark", version("1.0.0"), dependencies(&["top"]));
        graph.insert("zebra", version("1.0.0"), Vec::new());
        assert_eq!(
            graph.load_order(),
            names(&["base", "left", "right", "top", "aardvark", "zebra"])
        );
        assert_eq!(DependencyGraph::new().load_order(), Vec::<String>::new());
    }

    #[test]
    fn load_order_still_lists_every_node_of_a_graph_with_a_cycle() {
        // insert does not validate, so a cycle can be built by hand; nothing may be lost or hang.
        let graph = graph(&[
            ("a", &["b"]),
            ("b", &["a"]),
            ("c", &[]),
            ("d", &["a"]),
            ("e", &["e"]),
        ]);
        assert_eq!(graph.load_order(), names(&["c", "e", "a", "b", "d"]));
        assert_eq!(graph.dependents_in_unload_order("a"), names(&["b", "d"]));
    }

    fn candidate(index: usize, name: &str, candidate_dependencies: &[&str]) -> Candidate {
        Candidate {
            index,
            name: name.to_string(),
            version: version("1.0.0"),
            dependencies: dependencies(candidate_dependencies),
        }
    }

    #[test]
    fn batch_plan_orders_dependencies_first_with_ties_by_name() {
        let loaded = graph(&[("users", &[])]);
        let candidates = [
            candidate(0, "orders", &["users", "billing"]),
            candidate(1, "billing", &["users"]),
            candidate(2, "audit", &[]),
            candidate(3, "reports", &["orders", "audit"]),
        ];
        let (order, refused) = plan_batch_load(&loaded, &candidates);
        assert_eq!(order, vec![2, 1, 0, 3]);
        assert!(refused.is_empty());
        assert_eq!(plan_batch_load(&loaded, &[]), (Vec::new(), Vec::new()));
    }

    #[test]
    fn batch_plan_refuses_cycle_members_with_their_path_and_keeps_the_rest() {
        let candidates = [
            candidate(0, "a", &["b"]),
            candidate(1, "b", &["c"]),
            candidate(2, "c", &["a"]),
            candidate(3, "after", &["a"]),
            candidate(4, "free", &[]),
        ];
        let (order, refused) = plan_batch_load(&DependencyGraph::new(), &candidates);
        assert_eq!(order, vec![3, 4]);
        assert_eq!(
            refused,
            vec![
                (
                    0,
                    Error::CircularDependency {
                        path: names(&["a", "b", "c", "a"])
                    }
                ),
                (
                    1,
                    Error::CircularDependency {
                        path: names(&["b", "c", "a", "b"])
                    }
                ),
                (
                    2,
                    Error::CircularDependency {
                        path: names(&["c", "a", "b", "c"])
                    }
                ),
            ]
        );
    }

    #[test]
    fn batch_plan_refuses_self_dependency() {
        let candidates = [
            candidate(0, "loop", &["loop"]),
            candidate(1, "user", &["loop"]),
        ];
        let (order, refused) = plan_batch_load(&DependencyGraph::new(), &candidates);
        assert_eq!(order, vec![1]);
        assert_eq!(
            refused,
            vec![(
                0,
                Error::SelfDependency {
                    plugin: "loop".to_string()
                }
            )]
        );
    }

    #[test]
    fn batch_plan_refuses_every_candidate_sharing_a_name() {
        let candidates = [
            candidate(0, "dup", &[]),
            candidate(1, "needs-dup", &["dup"]),
            candidate(2, "dup", &[]),
            candidate(3, "tri", &[]),
            candidate(4, "tri", &[]),
            candidate(5, "tri", &[]),
        ];
        let (order, refused) = plan_batch_load(&DependencyGraph::new(), &candidates);
        assert_eq!(order, vec![1]);
        let two = Error::invalid_format("two files declare plugin 'dup'");
        let three = Error::invalid_format("3 files declare plugin 'tri'");
        assert_eq!(
            refused,
            vec![
                (0, two.clone()),
                (2, two),
                (3, three.clone()),
                (4, three.clone()),
                (5, three)
            ]
        );
    }

    #[test]
    fn batch_plan_leaves_missing_dependencies_to_the_load() {
        let candidates = [candidate(7, "orders", &["nowhere"])];
        let (order, refused) = plan_batch_load(&DependencyGraph::new(), &candidates);
        assert_eq!(order, vec![7]);
        assert!(refused.is_empty());
    }
}
