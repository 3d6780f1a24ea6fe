//! A plugin's HTTP routes: the `routes` map of its module, validated at load and matched per
//! request by `matchit` (the router axum uses), never by hand-written matching.
//!
//! A route is `"METHOD /path"`. Path segments are literals, `:name` (one non-empty segment) or a
//! final `*name` (the rest, possibly empty). Precedence, as the plugin API says: a literal
//! segment wins over `:name`, which wins over `*name` (matchit's own priority); a route's own
//! method wins over `*` at the same shape (the method's router holds its own routes first and
//! the `*` routes only where their shape is still free).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::{Error, Result};

/// The methods a route may name, in the order `Allow` lists them.
pub const ROUTE_METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// A route's method: one of [`ROUTE_METHODS`], or `*` for any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteMethod {
    /// One named method (an index into [`ROUTE_METHODS`]).
    Named(usize),
    /// `*`: every method.
    Any,
}

impl RouteMethod {
    fn parse(text: &str) -> Option<Self> {
        if text == "*" {
            return Some(RouteMethod::Any);
        }
        ROUTE_METHODS
            .iter()
            .position(|method| *method == text)
            .map(RouteMethod::Named)
    }

    /// As written in a route (`GET`, `*`).
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMethod::Named(index) => ROUTE_METHODS[index],
            RouteMethod::Any => "*",
        }
    }
}

/// What a route's key points at, as the module declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclaredHandler {
    /// A function written in the `routes` map itself.
    Function,
    /// The name of one of the plugin's functions.
    Named(String),
    /// Anything else (a number, an object): refused at load.
    Invalid,
}

/// One entry of the module's `routes` map, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredRoute {
    /// The map's key, `"METHOD /path"`.
    pub key: String,
    pub handler: DeclaredHandler,
}

/// One validated route, as `PluginInfo.routes` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: RouteMethod,
    /// The path as declared (`/orders/:id`), without a trailing `/`.
    pub path: String,
    /// The exported function it calls, or `None` for a function in the map.
    pub handler: Option<String>,
    /// Parameter names in path order; the last is the catch-all's when `catch_all` is set.
    params: Vec<String>,
    catch_all: bool,
    /// `METHOD /path`, computed once: every request is counted and logged under it.
    key: String,
}

impl RouteSpec {
    /// The declared pattern with its method, as logs and metrics name it (`GET /orders/:id`).
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// Route `route` (its index in the plugin's order), with its parameters percent-decoded.
    Found {
        route: usize,
        params: Vec<(String, String)>,
    },
    /// The path matches routes of other methods only; `allow` lists them (`HEAD` with `GET`).
    MethodNotAllowed {
        allow: Vec<&'static str>,
    },
    NotFound,
}

/// What a matchit entry points at.
#[derive(Debug, Clone, Copy)]
struct Target {
    route: usize,
    /// Registered for a catch-all's empty rest (`/files` for `/files/*rest`).
    empty_rest: bool,
}

/// A plugin's routes and their routers; built once per load, swapped with the plugin.
#[derive(Debug, Clone, Default)]
pub struct PluginRoutes {
    specs: Vec<RouteSpec>,
    /// One router per named method some route declares: its routes, then the `*` routes.
    by_method: HashMap<RouteMethod, MethodRouter>,
    /// The `*` routes alone, for every other method.
    any: Option<MethodRouter>,
}

/// The routes one method answers. matchit refuses a `:name` and a `*name` at one position of
/// one tree, which the plugin API allows, so catch-all routes go in trees of their own: each in
/// the first tree that takes it (with its empty-rest entry), or a new one.
#[derive(Debug, Clone, Default)]
struct MethodRouter {
    others: matchit::Router<Target>,
    catch_alls: Vec<matchit::Router<Target>>,
}

impl MethodRouter {
    fn insert_catch_all(
        &mut self,
        entries: &[(String, Target)],
    ) -> std::result::Result<(), matchit::InsertError> {
        let insert_all = |tree: &mut matchit::Router<Target>| {
            entries
                .iter()
                .try_for_each(|(pattern, target)| tree.insert(pattern.clone(), *target))
        };
        for tree in &mut self.catch_alls {
            let mut candidate = tree.clone();
            if insert_all(&mut candidate).is_ok() {
                *tree = candidate;
                return Ok(());
            }
        }
        let mut tree = matchit::Router::new();
        insert_all(&mut tree)?;
        self.catch_alls.push(tree);
        Ok(())
    }
}

impl PartialEq for PluginRoutes {
    fn eq(&self, other: &Self) -> bool {
        self.specs == other.specs
    }
}

impl Eq for PluginRoutes {}

/// The most routes one plugin may declare.
pub const MAX_ROUTES: usize = 1_000;
/// The longest route key.
const MAX_ROUTE_KEY_BYTES: usize = 1_024;

impl PluginRoutes {
    /// Validates the declared routes against the plugin's exported functions and builds the
    /// routers. Errors are `InvalidPluginFormat` naming the route and saying what to fix.
    pub fn new(declared: &[DeclaredRoute], exports: &[String]) -> Result<Self> {
        if declared.len() > MAX_ROUTES {
            return Err(Error::invalid_format(format!(
                "the plugin declares {} routes, more than the {MAX_ROUTES} allowed",
                declared.len()
            )));
        }
        let mut specs = Vec::with_capacity(declared.len());
        let mut shapes: BTreeMap<(RouteMethod, String), String> = BTreeMap::new();
        for route in declared {
            let spec = parse_route(route, exports)?;
            let shape = shape_of(&spec.path);
            if let Some(first) = shapes.insert((spec.method, shape), route.key.clone()) {
                return Err(Error::invalid_format(format!(
                    "route '{}' has the same method and shape as route '{first}'; remove one, or \
                     give them different literal segments",
                    route.key
                )));
            }
            specs.push(spec);
        }
        let mut routes = PluginRoutes {
            specs,
            ..PluginRoutes::default()
        };
        let methods: Vec<RouteMethod> = {
            let mut methods: Vec<RouteMethod> = routes
                .specs
                .iter()
                .map(|spec| spec.method)
                .filter(|method| *method != RouteMethod::Any)
                .collect();
            methods.sort_unstable();
            methods.dedup();
            methods
        };
        for method in methods {
            let router = routes.router_for(|spec| spec.method == method)?;
            routes.by_method.insert(method, router);
        }
        if routes
            .specs
            .iter()
            .any(|spec| spec.method == RouteMethod::Any)
        {
            routes.any = Some(routes.router_for(|_| false)?);
        }
        Ok(routes)
    }

    /// The routes in the plugin's order.
    pub fn specs(&self) -> &[RouteSpec] {
        &self.specs
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// A router holding the routes `own` selects, then the `*` routes whose shape is still free.
    fn router_for(&self, own: impl Fn(&RouteSpec) -> bool) -> Result<MethodRouter> {
        let mut router = MethodRouter::default();
        let mut taken: HashSet<String> = HashSet::new();
        let selected = self
            .specs
            .iter()
            .enumerate()
            .filter(|(_, spec)| own(spec))
            .chain(
                self.specs
                    .iter()
                    .enumerate()
                    .filter(|(_, spec)| spec.method == RouteMethod::Any),
            )
            .collect::<Vec<_>>();
        for (route, spec) in selected {
            let pattern = matchit_pattern(spec);
            if taken.contains(&pattern) {
                // A `*` route whose shape this method's own route already has.
                continue;
            }
            let target = |empty_rest| Target { route, empty_rest };
            if spec.catch_all {
                let entries = [
                    (pattern.clone(), target(false)),
                    (empty_rest_pattern(spec), target(true)),
                ];
                router
                    .insert_catch_all(&entries)
                    .map_err(|error| self.conflict(route, &error))?;
            } else {
                router
                    .others
                    .insert(pattern.clone(), target(false))
                    .map_err(|error| self.conflict(route, &error))?;
            }
            taken.insert(pattern);
        }
        Ok(router)
    }

    fn conflict(&self, route: usize, error: &matchit::InsertError) -> Error {
        Error::invalid_format(format!(
            "route '{}' cannot be told apart from another route of the plugin ({error}); \
             change one of their paths",
            self.specs[route].key()
        ))
    }

    /// Finds the route for a request. `path` is the raw (still percent-encoded) path after
    /// `/api/<plugin>`, starting with `/`; a trailing `/` is ignored. `HEAD` uses the `GET` routes.
    pub fn find(&self, method: &str, path: &str) -> RouteMatch {
        let path = normalized_path(path);
        let effective = if method == "HEAD" { "GET" } else { method };
        let router = RouteMethod::parse(effective)
            .filter(|method| *method != RouteMethod::Any)
            .and_then(|method| self.by_method.get(&method))
            .or(self.any.as_ref());
        if let Some(found) = router.and_then(|router| self.lookup(router, path)) {
            return found;
        }
        let mut allow: Vec<&'static str> = Vec::new();
        for (index, method) in ROUTE_METHODS.iter().enumerate() {
            let Some(router) = self.by_method.get(&RouteMethod::Named(index)) else {
                continue;
            };
            if *method != effective && self.lookup(router, path).is_some() {
                allow.push(method);
                if *method == "GET" {
                    allow.push("HEAD");
                }
            }
        }
        if allow.is_empty() {
            RouteMatch::NotFound
        } else {
            RouteMatch::MethodNotAllowed { allow }
        }
    }

    fn lookup(&self, router: &MethodRouter, path: &str) -> Option<RouteMatch> {
        // matchit orders the routes within each tree; between trees, the first segment where
        // the matching patterns differ decides.
        let matched = std::iter::once(&router.others)
            .chain(&router.catch_alls)
            .filter_map(|tree| tree.at(path).ok())
            .reduce(|best, candidate| {
                if self.specificity(*candidate.value) > self.specificity(*best.value) {
                    candidate
                } else {
                    best
                }
            })?;
        let target = *matched.value;
        let spec = &self.specs[target.route];
        let mut params = Vec::with_capacity(spec.params.len());
        for (position, name) in spec.params.iter().enumerate() {
            let is_rest = spec.catch_all && position + 1 == spec.params.len();
            let raw = if target.empty_rest && is_rest {
                ""
            } else {
                matched.params.get(param_key(position).as_str())?
            };
            if raw.is_empty() && !is_rest {
                // `:name` matches one non-empty segment (`/a//b` is not `/a/:x/b`).
                return None;
            }
            params.push((name.clone(), percent_decoded(raw)));
        }
        Some(RouteMatch::Found {
            route: target.route,
            params,
        })
    }

    /// Per segment: literal 3, `:name` 2, the end of the pattern 2, `*name` 1; compared in
    /// order, the larger is the more specific route.
    fn specificity(&self, target: Target) -> Vec<u8> {
        let spec = &self.specs[target.route];
        let mut score: Vec<u8> = spec
            .path
            .split('/')
            .skip(1)
            .filter(|segment| !segment.is_empty())
            .map(|segment| match segment.as_bytes()[0] {
                b':' => 2,
                b'*' => 1,
                _ => 3,
            })
            .collect();
        if !spec.catch_all {
            score.push(2);
        }
        score
    }
}

/// A request path with one trailing `/` removed (the root stays `/`).
pub fn normalized_path(path: &str) -> &str {
    if path.is_empty() {
        return "/";
    }
    match path.strip_suffix('/') {
        Some("") | None => path,
        Some(stripped) => stripped,
    }
}

fn percent_decoded(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

fn param_key(position: usize) -> String {
    format!("p{position}")
}

/// The pattern matchit stores: parameters named by position, so that `/a/:x` and `/a/:y` of two
/// methods share one shape.
fn matchit_pattern(spec: &RouteSpec) -> String {
    let mut pattern = String::new();
    let mut position = 0;
    for segment in spec.path.split('/').skip(1) {
        pattern.push('/');
        if segment.starts_with(':') {
            pattern.push_str(&format!("{{{}}}", param_key(position)));
            position += 1;
        } else if segment.starts_with('*') {
            pattern.push_str(&format!("{{*{}}}", param_key(position)));
            position += 1;
        } else {
            pattern.push_str(segment);
        }
    }
    if pattern.is_empty() {
        pattern.push('/');
    }
    pattern
}

/// A catch-all route's pattern without its last segment: the path with an empty rest.
fn empty_rest_pattern(spec: &RouteSpec) -> String {
    let pattern = matchit_pattern(spec);
    match pattern.rsplit_once('/') {
        Some(("", _)) | None => "/".to_owned(),
        Some((prefix, _)) => prefix.to_owned(),
    }
}

/// The path with parameter names erased: two routes of one method with one shape collide.
fn shape_of(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with(':') {
                ":"
            } else if segment.starts_with('*') {
                "*"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Characters a literal segment may hold: the URL's unreserved and sub-delimiter characters,
/// which a request carries as they are (anything else arrives percent-encoded and could never
/// match a literal written unencoded).
fn literal_character(character: char) -> bool {
    character.is_ascii_alphanumeric() || "-._~!$&'()+,;=@".contains(character)
}

fn parameter_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
}

fn parse_route(route: &DeclaredRoute, exports: &[String]) -> Result<RouteSpec> {
    let refuse = |what: &str| {
        Error::invalid_format(format!(
            "route '{}': {what}",
            route
                .key
                .chars()
                .take(MAX_ROUTE_KEY_BYTES)
                .collect::<String>()
        ))
    };
    if route.key.len() > MAX_ROUTE_KEY_BYTES {
        return Err(refuse(&format!(
            "the key is longer than {MAX_ROUTE_KEY_BYTES} bytes"
        )));
    }
    let Some((method, path)) = route.key.split_once(' ') else {
        return Err(refuse(
            "write the key as \"METHOD /path\", with one space (\"GET /orders/:id\")",
        ));
    };
    let method = RouteMethod::parse(method).ok_or_else(|| {
        refuse(&format!(
            "unknown method '{method}'; use one of {}, or * for any",
            ROUTE_METHODS.join(", ")
        ))
    })?;
    if !path.starts_with('/') {
        return Err(refuse("the path must start with '/'"));
    }
    let path = normalized_path(path);
    let mut params: Vec<String> = Vec::new();
    let mut catch_all = false;
    let segments: Vec<&str> = if path == "/" {
        Vec::new()
    } else {
        path.split('/').skip(1).collect()
    };
    for segment in &segments {
        if catch_all {
            return Err(refuse("a *name segment must be the last one"));
        }
        if let Some(name) = segment
            .strip_prefix(':')
            .or_else(|| segment.strip_prefix('*'))
        {
            if !parameter_name(name) {
                return Err(refuse(&format!(
                    "segment '{segment}' needs a parameter name of letters, digits and '_' \
                     (not starting with a digit) after its '{}'",
                    &segment[..1]
                )));
            }
            if params.iter().any(|known| known == name) {
                return Err(refuse(&format!(
                    "the parameter '{name}' appears twice; give each its own name"
                )));
            }
            params.push(name.to_owned());
            catch_all = segment.starts_with('*');
        } else if segment.is_empty() {
            return Err(refuse("the path has an empty segment ('//')"));
        } else if !segment.chars().all(literal_character) {
            return Err(refuse(&format!(
                "segment '{segment}' may hold only letters, digits and -._~!$&'()+,;=@ \
                 (a request carries anything else percent-encoded)"
            )));
        }
    }
    let handler = match &route.handler {
        DeclaredHandler::Function => None,
        DeclaredHandler::Named(name) if exports.contains(name) => Some(name.clone()),
        DeclaredHandler::Named(name) => {
            return Err(refuse(&format!(
                "the handler '{name}' is not a function of the plugin; name one of its \
                 functions, or write the function in the map"
            )))
        }
        DeclaredHandler::Invalid => {
            return Err(refuse(
                "the handler must be a function, or the name of one of the plugin's functions",
            ))
        }
    };
    Ok(RouteSpec {
        key: format!("{} {path}", method.as_str()),
        method,
        path: path.to_owned(),
        handler,
        params,
        catch_all,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(key: &str) -> DeclaredRoute {
        DeclaredRoute {
            key: key.into(),
            handler: DeclaredHandler::Function,
        }
    }

    fn routes(keys: &[&str]) -> PluginRoutes {
        let declared: Vec<_> = keys.iter().map(|key| declared(key)).collect();
        PluginRoutes::new(&declared, &[]).unwrap()
    }

    fn refusal(keys: &[&str]) -> String {
        let declared: Vec<_> = keys.iter().map(|key| declared(key)).collect();
        PluginRoutes::new(&declared, &["known".into()])
            .unwrap_err()
            .to_string()
    }

    fn found(routes: &PluginRoutes, method: &str, path: &str) -> (String, Vec<(String, String)>) {
        match routes.find(method, path) {
            RouteMatch::Found { route, params } => (routes.specs()[route].key().to_owned(), params),
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn parameters_are_matched_then_percent_decoded() {
        let routes = routes(&["GET /orders/:id", "GET /files/*rest"]);
        assert_eq!(
            found(&routes, "GET", "/orders/42"),
            ("GET /orders/:id".into(), pairs(&[("id", "42")]))
        );
        assert_eq!(
            found(&routes, "GET", "/orders/a%2Fb").1,
            pairs(&[("id", "a/b")]),
            "an encoded / stays inside one segment"
        );
        assert_eq!(
            found(&routes, "GET", "/files/a/b%20c.txt").1,
            pairs(&[("rest", "a/b c.txt")])
        );
        assert_eq!(
            found(&routes, "GET", "/files").1,
            pairs(&[("rest", "")]),
            "a catch-all matches an empty rest"
        );
        assert_eq!(found(&routes, "GET", "/files/").1, pairs(&[("rest", "")]));
        assert_eq!(routes.find("GET", "/orders"), RouteMatch::NotFound);
        assert_eq!(routes.find("GET", "/orders/1/2"), RouteMatch::NotFound);
    }

    #[test]
    fn a_literal_wins_over_a_parameter_which_wins_over_a_catch_all() {
        let routes = routes(&["GET /a/*rest", "GET /a/:x", "GET /a/b"]);
        assert_eq!(found(&routes, "GET", "/a/b").0, "GET /a/b");
        assert_eq!(found(&routes, "GET", "/a/c").0, "GET /a/:x");
        assert_eq!(found(&routes, "GET", "/a/c/d").0, "GET /a/*rest");
        assert_eq!(found(&routes, "GET", "/a").0, "GET /a/*rest");
    }

    #[test]
    fn a_routes_own_method_wins_over_any_method() {
        let routes = routes(&["* /items/:id", "DELETE /items/:id"]);
        assert_eq!(found(&routes, "DELETE", "/items/1").0, "DELETE /items/:id");
        assert_eq!(found(&routes, "GET", "/items/1").0, "* /items/:id");
        assert_eq!(
            found(&routes, "PROPFIND", "/items/1").0,
            "* /items/:id",
            "any method, also one no route names"
        );
    }

    #[test]
    fn head_is_answered_by_get_and_other_methods_get_405_with_allow() {
        let routes = routes(&["GET /x", "POST /x", "PUT /y"]);
        assert_eq!(found(&routes, "HEAD", "/x").0, "GET /x");
        assert_eq!(
            routes.find("DELETE", "/x"),
            RouteMatch::MethodNotAllowed {
                allow: vec!["GET", "HEAD", "POST"]
            }
        );
        assert_eq!(
            routes.find("HEAD", "/y"),
            RouteMatch::MethodNotAllowed { allow: vec!["PUT"] }
        );
        assert_eq!(routes.find("GET", "/z"), RouteMatch::NotFound);
    }

    #[test]
    fn a_trailing_slash_on_the_request_or_the_route_is_ignored() {
        let routes = routes(&["GET /", "GET /list/"]);
        assert_eq!(found(&routes, "GET", "/").0, "GET /");
        assert_eq!(found(&routes, "GET", "").0, "GET /");
        assert_eq!(found(&routes, "GET", "/list/").0, "GET /list");
        assert_eq!(found(&routes, "GET", "/list").0, "GET /list");
    }

    #[test]
    fn an_empty_segment_is_not_a_parameter() {
        let routes = routes(&["GET /a/:x/b"]);
        assert_eq!(routes.find("GET", "/a//b"), RouteMatch::NotFound);
    }

    #[test]
    fn a_literal_route_takes_the_path_of_a_catch_alls_empty_rest() {
        let routes = routes(&["GET /files/*rest", "GET /files"]);
        assert_eq!(found(&routes, "GET", "/files").0, "GET /files");
        assert_eq!(found(&routes, "GET", "/files/x").0, "GET /files/*rest");
    }

    #[test]
    fn routes_of_one_method_and_shape_are_refused_naming_both() {
        let error = refusal(&["GET /a/:x", "GET /a/:y"]);
        assert!(
            error.contains("'GET /a/:y'") && error.contains("'GET /a/:x'"),
            "{error}"
        );
        // Other methods may share a shape, with their own parameter names.
        let routes = routes(&["GET /a/:x", "POST /a/:y"]);
        assert_eq!(found(&routes, "POST", "/a/1").1, pairs(&[("y", "1")]));
        assert_eq!(found(&routes, "GET", "/a/1").1, pairs(&[("x", "1")]));
    }

    #[test]
    fn malformed_routes_are_refused_saying_what_to_fix() {
        for (keys, expected) in [
            (&["FETCH /x"][..], "unknown method 'FETCH'"),
            (&["get /x"][..], "unknown method 'get'"),
            (&["GET"][..], "\"METHOD /path\""),
            (&["GET x"][..], "must start with '/'"),
            (&["GET /a//b"][..], "empty segment"),
            (&["GET /a/*rest/b"][..], "must be the last"),
            (&["GET /a/:"][..], "parameter name"),
            (&["GET /a/:1x"][..], "parameter name"),
            (&["GET /a/:x/:x"][..], "appears twice"),
            (&["GET /a/{x}"][..], "may hold only"),
            (&["GET /caf\u{e9}"][..], "may hold only"),
            (&["GET /a?b"][..], "may hold only"),
        ] {
            let error = refusal(keys);
            assert!(error.contains(expected), "{keys:?}: {error}");
            assert!(error.contains(&format!("route '{}'", keys[0])), "{error}");
        }
    }

    #[test]
    fn handlers_must_be_functions_of_the_plugin() {
        let named = |name: &str| DeclaredRoute {
            key: "GET /x".into(),
            handler: DeclaredHandler::Named(name.into()),
        };
        let exports = vec!["getOrder".to_string()];
        let routes = PluginRoutes::new(&[named("getOrder")], &exports).unwrap();
        assert_eq!(routes.specs()[0].handler.as_deref(), Some("getOrder"));
        let error = PluginRoutes::new(&[named("missing")], &exports)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("'GET /x'") && error.contains("'missing'"),
            "{error}"
        );
        let invalid = DeclaredRoute {
            key: "GET /x".into(),
            handler: DeclaredHandler::Invalid,
        };
        assert!(PluginRoutes::new(&[invalid], &exports)
            .unwrap_err()
            .to_string()
            .contains("must be a function"));
    }

    #[test]
    fn the_number_of_routes_is_bounded() {
        let declared: Vec<_> = (0..=MAX_ROUTES)
            .map(|index| declared(&format!("GET /r{index}")))
            .collect();
        assert!(PluginRoutes::new(&declared, &[])
            .unwrap_err()
            .to_string()
            .contains("more than"));
    }

    // Attacks of the review of the HTTP routes feature: shapes the contract allows that matchit
    // could refuse, backtracking between literals and parameters, and hostile keys.

    #[test]
    fn catch_alls_behind_a_parameter_load_beside_a_catch_all_at_that_position() {
        // Different shapes, so the contract refuses none of these; the precedence rule says
        // which one answers (`:name` wins over `*name`).
        for keys in [
            &["GET /files/*rest", "GET /files/:dir/*more"][..],
            &["GET /*rest", "GET /:tenant/*path"][..],
            &["* /files/*rest", "GET /files/:dir/*more"][..],
        ] {
            let declared: Vec<_> = keys.iter().map(|key| declared(key)).collect();
            if let Err(error) = PluginRoutes::new(&declared, &[]) {
                panic!("{keys:?} is refused: {error}");
            }
        }
        let routes = routes(&["GET /files/*rest", "GET /files/:dir/*more"]);
        assert_eq!(
            found(&routes, "GET", "/files/a/b/c"),
            (
                "GET /files/:dir/*more".into(),
                pairs(&[("dir", "a"), ("more", "b/c")])
            )
        );
        assert_eq!(
            found(&routes, "GET", "/files"),
            ("GET /files/*rest".into(), pairs(&[("rest", "")]))
        );
    }

    #[test]
    fn a_literal_that_leads_nowhere_falls_back_to_a_parameter_then_a_catch_all() {
        let routes = routes(&["GET /a/b", "GET /:x/c", "GET /a/:y/d", "GET /:x/*rest"]);
        assert_eq!(
            found(&routes, "GET", "/a/c"),
            ("GET /:x/c".into(), pairs(&[("x", "a")]))
        );
        assert_eq!(
            found(&routes, "GET", "/a/z/d"),
            ("GET /a/:y/d".into(), pairs(&[("y", "z")]))
        );
        assert_eq!(
            found(&routes, "GET", "/a/z/q"),
            (
                "GET /:x/*rest".into(),
                pairs(&[("x", "a"), ("rest", "z/q")])
            )
        );
        assert_eq!(
            found(&routes, "GET", "/a"),
            ("GET /:x/*rest".into(), pairs(&[("x", "a"), ("rest", "")]))
        );
        assert_eq!(found(&routes, "GET", "/a/b").0, "GET /a/b");
    }

    #[test]
    fn encoded_slashes_and_dots_stay_inside_their_parameter() {
        let routes = routes(&[
            "GET /files/*rest",
            "GET /users/:id",
            "GET /users/:id/avatar",
        ]);
        assert_eq!(
            found(&routes, "GET", "/users/..%2Fadmin").1,
            pairs(&[("id", "../admin")])
        );
        assert_eq!(
            found(&routes, "GET", "/users/%2e%2e/avatar"),
            ("GET /users/:id/avatar".into(), pairs(&[("id", "..")]))
        );
        assert_eq!(
            found(&routes, "GET", "/files/%2e%2e%2f%2e%2e%2fetc/passwd").1,
            pairs(&[("rest", "../../etc/passwd")])
        );
        // Invalid escapes and invalid UTF-8 never panic; they decode lossily.
        assert_eq!(
            found(&routes, "GET", "/users/%zz").1,
            pairs(&[("id", "%zz")])
        );
        assert_eq!(
            found(&routes, "GET", "/users/%C3").1,
            pairs(&[("id", "\u{fffd}")])
        );
        // Paths a client sends with braces or odd characters find nothing, without panicking.
        for path in [
            "/{p0}",
            "/users/{p0}/avatar",
            "/files{*p0}",
            "//",
            "/users//avatar",
        ] {
            let _ = routes.find("GET", path);
        }
        assert_eq!(routes.find("GET", "/users//avatar"), RouteMatch::NotFound);
    }

    #[test]
    fn hostile_keys_are_refused_naming_the_route_and_never_panic() {
        for key in [
            "",
            " ",
            " GET /x",
            "GET  /x",
            "GET\t/x",
            "GET /x\n",
            "GET /a b",
            "GET /\u{0}",
            "GET /:",
            "GET /*",
            "GET /:x/*x",
            "GET /*a/*b",
            "GET /a/:x:y",
            "GET /a/*rest/",
            "GET /{{x}}",
            "GET /a/}",
            "GET /%2F",
            "GET /a:b",
            "GET /\u{1f600}",
            "HEAD /x",
            "GET,POST /x",
            "get /x",
        ] {
            let declared = vec![declared(key)];
            match PluginRoutes::new(&declared, &[]) {
                // `/a/*rest/` is `/a/*rest` once its trailing `/` is ignored.
                Ok(_) if key == "GET /a/*rest/" => {}
                Ok(routes) => panic!("{key:?} was accepted: {:?}", routes.specs()),
                Err(error) => {
                    assert!(
                        matches!(error, Error::InvalidPluginFormat { .. }),
                        "{key:?}: {error:?}"
                    );
                    assert!(error.to_string().contains("route '"), "{key:?}: {error}");
                }
            }
        }
        // A key over the length limit is refused, and the message stays bounded.
        let long = format!("GET /{}", "\u{e9}".repeat(4 * MAX_ROUTE_KEY_BYTES));
        let error = PluginRoutes::new(&[declared(&long)], &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("longer than"), "{error}");
        assert!(
            error.len() < 8 * MAX_ROUTE_KEY_BYTES,
            "{} bytes",
            error.len()
        );
    }

    #[test]
    fn parameter_names_that_are_object_prototype_keys_are_plain_params() {
        let routes = routes(&["GET /:__proto__/:constructor"]);
        assert_eq!(
            found(&routes, "GET", "/a/b").1,
            pairs(&[("__proto__", "a"), ("constructor", "b")])
        );
    }

    #[test]
    fn a_thousand_any_method_routes_fill_every_methods_router_without_conflict() {
        let mut keys: Vec<String> = (0..MAX_ROUTES / 2)
            .map(|index| format!("* /any{index}/:id"))
            .collect();
        keys.extend(
            ROUTE_METHODS
                .iter()
                .cycle()
                .take(MAX_ROUTES / 2)
                .enumerate()
                .map(|(index, method)| format!("{method} /own{index}")),
        );
        let declared: Vec<_> = keys.iter().map(|key| declared(key)).collect();
        let routes = PluginRoutes::new(&declared, &[]).unwrap();
        assert_eq!(routes.specs().len(), MAX_ROUTES);
        assert_eq!(
            found(&routes, "DELETE", "/any499/7"),
            ("* /any499/:id".into(), pairs(&[("id", "7")]))
        );
        assert_eq!(found(&routes, "PROPFIND", "/any0/x").0, "* /any0/:id");
        assert_eq!(found(&routes, "GET", "/own0").0, "GET /own0");
        assert_eq!(
            routes.find("POST", "/own0"),
            RouteMatch::MethodNotAllowed {
                allow: vec!["GET", "HEAD"]
            }
        );
    }
}
