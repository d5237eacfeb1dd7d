//! Reads the crate the way rustc does and resolves every path in it to an absolute one.
//!
//! Modules are found by following `mod` declarations from `lib.rs` (so `mod.rs`, inline
//! `mod x { }` and `#[path]` land where the compiler puts them), not by file names. Each path
//! is resolved through `crate`/`self`/`super`, the module's `use` aliases and renames, its
//! items, crate-internal globs and `extern crate`, then followed through other modules'
//! re-exports. Resolution is by name only (no types): enough for imports, which is what the
//! layering rules are about.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// More `use` hops than this is an alias loop (`use a as b; use b as a;`): stop there.
const MAX_HOPS: usize = 16;

/// A module or item path, segment by segment: `["crate", "io", "clock"]`, `["std", "thread"]`.
pub type Segs = Vec<String>;

/// One path found in the sources.
#[derive(Debug, Clone)]
pub struct Ref {
    /// The module whose code holds the path.
    pub module: Segs,
    /// `file:line`, for messages.
    pub at: String,
    /// Every crate path it passes through on the way to its definition, then the definition
    /// (re-exports included); a single entry for external paths.
    pub hops: Vec<Segs>,
    /// A `use` ending in `*`: it may bring in anything under its path.
    pub glob: bool,
    /// A `pub use`: the module's public face, not something its own code depends on.
    pub reexport: bool,
    /// Inside `#[cfg(test)]` or `#[test]`: never part of the shipped server.
    pub test_only: bool,
}

impl Ref {
    /// Where the path finally leads.
    pub fn target(&self) -> &Segs {
        // A Ref is only recorded with at least one hop.
        &self.hops[self.hops.len() - 1]
    }
}

#[derive(Default)]
struct Module {
    /// Names defined here: items, child modules, macros.
    items: BTreeSet<String>,
    /// `use` bindings: name → path as written (relative to this module).
    aliases: BTreeMap<String, (Segs, bool)>,
    /// `use path::*` of this module, as written.
    globs: Vec<(Segs, bool)>,
    test_only: bool,
}

/// The parsed crate: its module tree, its files and the external crate names in scope.
pub struct Crate {
    modules: BTreeMap<Segs, Module>,
    files: Vec<(Segs, String, syn::File)>,
    externs: BTreeSet<String>,
}

impl Crate {
    /// Parses the crate rooted at `root/lib.rs`, reading files from `sources` (path → text).
    pub fn parse(
        root: &Path,
        sources: &BTreeMap<PathBuf, String>,
        externs: BTreeSet<String>,
    ) -> Result<Crate, String> {
        let mut krate = Crate {
            modules: BTreeMap::new(),
            files: Vec::new(),
            externs,
        };
        let lib = root.join("lib.rs");
        krate.load(vec!["crate".into()], &lib, true, false, sources)?;
        Ok(krate)
    }

    /// The files reached from `lib.rs`.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|(_, f, _)| f.as_str())
    }

    /// Whether `path` names a module of this crate.
    pub fn is_module(&self, path: &[String]) -> bool {
        self.modules.contains_key(path)
    }

    /// Every path in every file, resolved.
    pub fn refs(&self) -> Vec<Ref> {
        let mut out = Vec::new();
        for (module, file, ast) in &self.files {
            let test_only = self.modules.get(module).is_some_and(|m| m.test_only);
            let mut v = Refs {
                krate: self,
                module: module.clone(),
                file,
                test_only,
                out: &mut out,
            };
            v.visit_file(ast);
        }
        out
    }

    fn load(
        &mut self,
        module: Segs,
        file: &Path,
        mod_rs: bool,
        test_only: bool,
        sources: &BTreeMap<PathBuf, String>,
    ) -> Result<(), String> {
        // `#[path = "../x.rs"]` must find the file it names: drop `..` lexically.
        let file = &file.components().fold(PathBuf::new(), |mut p, c| {
            match c {
                std::path::Component::ParentDir => _ = p.pop(),
                c => p.push(c),
            }
            p
        });
        let text = sources
            .get(file)
            .ok_or(format!("{}: no such file", file.display()))?;
        let ast = syn::parse_file(text).map_err(|e| format!("{}: {e}", file.display()))?;
        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
        // Children of `a/b.rs` live in `a/b/`, children of `mod.rs`/`lib.rs` beside it.
        let child_dir = match (mod_rs, file.file_stem()) {
            (false, Some(stem)) => dir.join(stem),
            _ => dir.clone(),
        };
        self.modules.insert(
            module.clone(),
            Module {
                test_only,
                ..Module::default()
            },
        );
        self.collect(
            &module, &ast.items, &dir, &child_dir, false, test_only, sources,
        )?;
        self.files.push((module, file.display().to_string(), ast));
        Ok(())
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one recursive walk; a struct would only rename them"
    )]
    fn collect(
        &mut self,
        module: &Segs,
        items: &[syn::Item],
        file_dir: &Path,
        child_dir: &Path,
        inline: bool,
        test_only: bool,
        sources: &BTreeMap<PathBuf, String>,
    ) -> Result<(), String> {
        for item in items {
            if let syn::Item::Mod(m) = item {
                let name = m.ident.to_string();
                let child: Segs = module.iter().cloned().chain([name.clone()]).collect();
                let test = test_only || is_test(&m.attrs);
                self.entry(module).items.insert(name.clone());
                if let Some((_, items)) = &m.content {
                    self.modules.insert(
                        child.clone(),
                        Module {
                            test_only: test,
                            ..Module::default()
                        },
                    );
                    let dir = child_dir.join(&name);
                    self.collect(&child, items, file_dir, &dir, true, test, sources)?;
                } else if let Some(path) = path_attr(&m.attrs) {
                    // `#[path]` is relative to the file's directory, or inside an inline
                    // module to that module's directory; the file then acts as a `mod.rs`.
                    let base = if inline { child_dir } else { file_dir };
                    self.load(child, &base.join(path), true, test, sources)?;
                } else {
                    let flat = child_dir.join(format!("{name}.rs"));
                    let (f, mod_rs) = if sources.contains_key(&flat) {
                        (flat, false)
                    } else {
                        (child_dir.join(&name).join("mod.rs"), true)
                    };
                    self.load(child, &f, mod_rs, test, sources)?;
                }
                continue;
            }
            // Items, `use` and `extern crate` anywhere inside (function bodies included) bind
            // names for this module: close enough for imports, and never misses one.
            let mut defs = Defs::default();
            defs.visit_item(item);
            let m = self.entry(module);
            m.items.extend(defs.items);
            m.aliases.extend(defs.aliases);
            m.globs.extend(defs.globs);
            self.externs.extend(defs.externs);
            // `#[macro_export]` puts a macro at the crate root; calling it there is still
            // depending on the module that wrote it.
            if let syn::Item::Macro(syn::ItemMacro {
                attrs,
                ident: Some(name),
                ..
            }) = item
            {
                if attrs.iter().any(|a| a.path().is_ident("macro_export")) {
                    let at: Segs = module.iter().cloned().chain([name.to_string()]).collect();
                    let root = self.entry(&vec!["crate".to_owned()]);
                    root.aliases.insert(name.to_string(), (at, false));
                }
            }
        }
        Ok(())
    }

    fn entry(&mut self, module: &Segs) -> &mut Module {
        self.modules.entry(module.clone()).or_default()
    }

    /// Resolves `path` as written in `module`: the hops it passes through, or `None` for a
    /// name that is local, generic, from the prelude or from an external glob.
    fn resolve(&self, module: &[String], path: &[String], global: bool) -> Option<Vec<Segs>> {
        self.resolve_at(module, path, global, 0)
    }

    fn resolve_at(
        &self,
        module: &[String],
        path: &[String],
        global: bool,
        depth: usize,
    ) -> Option<Vec<Segs>> {
        let first = path.first()?;
        if global || depth > MAX_HOPS {
            return self.externs.contains(first).then(|| vec![path.to_vec()]);
        }
        let mut at = module.to_vec();
        let mut i = match first.as_str() {
            "crate" => {
                at.truncate(1);
                1
            }
            "self" => 1,
            "Self" => return None,
            _ => 0,
        };
        while path.get(i).is_some_and(|s| s == "super") {
            at.pop();
            at.first()?;
            i += 1;
        }
        if i > 0 {
            at.extend_from_slice(&path[i..]);
            return Some(self.follow(at, depth));
        }
        if let Some(mut hops) = self.lookup(module, first, depth) {
            let last = hops.pop()?;
            let full: Segs = last.into_iter().chain(path[1..].iter().cloned()).collect();
            hops.extend(self.follow(full, depth));
            return Some(hops);
        }
        self.externs.contains(first).then(|| vec![path.to_vec()])
    }

    /// What `name` means inside crate module `module`: its own item, a `use` binding or a name
    /// from a crate-internal glob.
    fn lookup(&self, module: &[String], name: &str, depth: usize) -> Option<Vec<Segs>> {
        let m = self.modules.get(module)?;
        // A `use` may share its name with an item of the other namespace (`use std::sync as
        // s; fn s() {}`); taking the `use` first can only over-report, never hide an import.
        if let Some((target, global)) = m.aliases.get(name) {
            // `use tracing;` binds a name to itself: that is the external crate.
            let global = *global || target.len() == 1 && target[0] == name;
            return self.resolve_at(module, target, global, depth + 1);
        }
        if m.items.contains(name) {
            return Some(vec![
                module.iter().cloned().chain([name.to_owned()]).collect(),
            ]);
        }
        m.globs.iter().find_map(|(glob, global)| {
            let hops = self.resolve_at(module, glob, *global, depth + 1)?;
            let target = hops.last()?;
            let inner = self.modules.get(target)?;
            (inner.items.contains(name) || inner.aliases.contains_key(name))
                .then(|| self.lookup(target, name, depth + 1))?
        })
    }

    /// Follows an absolute crate path through re-exports to its definition.
    fn follow(&self, path: Segs, depth: usize) -> Vec<Segs> {
        if path.first().is_none_or(|s| s != "crate") || depth > MAX_HOPS {
            return vec![path];
        }
        let k = (1..=path.len())
            .rev()
            .find(|&k| self.modules.contains_key(&path[..k]))
            .unwrap_or(1);
        if k == path.len() {
            return vec![path];
        }
        match self.lookup(&path[..k], &path[k], depth + 1) {
            Some(mut hops) if hops.last().is_some_and(|l| l[..] != path[..=k]) => {
                let last = hops.pop().unwrap_or_default();
                let full: Segs = last
                    .into_iter()
                    .chain(path[k + 1..].iter().cloned())
                    .collect();
                let mut out = vec![path];
                out.extend(hops);
                out.extend(self.follow(full, depth + 1));
                out
            }
            _ => vec![path],
        }
    }
}

/// Names bound by one item: its own name, and the `use`/`extern crate`/items nested in it.
#[derive(Default)]
struct Defs {
    items: Vec<String>,
    aliases: Vec<(String, (Segs, bool))>,
    globs: Vec<(Segs, bool)>,
    externs: Vec<String>,
}

impl<'ast> Visit<'ast> for Defs {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        let name = match i {
            syn::Item::Const(x) => Some(&x.ident),
            syn::Item::Enum(x) => Some(&x.ident),
            syn::Item::Fn(x) => Some(&x.sig.ident),
            syn::Item::Macro(x) => x.ident.as_ref(),
            syn::Item::Static(x) => Some(&x.ident),
            syn::Item::Struct(x) => Some(&x.ident),
            syn::Item::Trait(x) => Some(&x.ident),
            syn::Item::Type(x) => Some(&x.ident),
            syn::Item::Union(x) => Some(&x.ident),
            _ => None,
        };
        self.items.extend(name.map(|n| n.to_string()));
        visit::visit_item(self, i);
    }

    fn visit_item_use(&mut self, i: &'ast syn::ItemUse) {
        for (path, name, _) in flatten(&i.tree) {
            match name {
                Some(n) if n != "_" => self.aliases.push((n, (path, i.leading_colon.is_some()))),
                Some(_) => {}
                None => self.globs.push((path, i.leading_colon.is_some())),
            }
        }
    }

    fn visit_item_extern_crate(&mut self, i: &'ast syn::ItemExternCrate) {
        let krate = i.ident.to_string();
        let target = if krate == "self" {
            "crate".to_owned()
        } else {
            krate.clone()
        };
        let name = i
            .rename
            .as_ref()
            .map_or(krate.clone(), |(_, n)| n.to_string());
        if krate != "self" {
            self.externs.push(krate);
        }
        self.aliases
            .push((name, (vec![target.clone()], target != "crate")));
    }
}

/// Flattens a `use` tree into (full path, bound name or `None` for a glob, line).
fn flatten(tree: &syn::UseTree) -> Vec<(Segs, Option<String>, usize)> {
    fn walk(t: &syn::UseTree, prefix: &mut Segs, out: &mut Vec<(Segs, Option<String>, usize)>) {
        match t {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                walk(&p.tree, prefix, out);
                prefix.pop();
            }
            syn::UseTree::Name(n) => out.push(bind(prefix, &n.ident, &n.ident)),
            syn::UseTree::Rename(r) => out.push(bind(prefix, &r.ident, &r.rename)),
            syn::UseTree::Glob(g) => {
                out.push((prefix.clone(), None, g.star_token.spans[0].start().line))
            }
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| walk(t, prefix, out)),
        }
    }
    // `use a::{self as b}` binds `b` to `a` itself.
    fn bind(prefix: &Segs, ident: &syn::Ident, name: &syn::Ident) -> (Segs, Option<String>, usize) {
        let mut path = prefix.clone();
        if ident != "self" {
            path.push(ident.to_string());
        }
        let bound = if name == "self" {
            path.last().cloned()
        } else {
            Some(name.to_string())
        };
        (path, bound, ident.span().start().line)
    }
    let mut out = Vec::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// Records every path in one file, resolved.
struct Refs<'a> {
    krate: &'a Crate,
    module: Segs,
    file: &'a str,
    test_only: bool,
    out: &'a mut Vec<Ref>,
}

impl Refs<'_> {
    fn record(&mut self, path: &[String], global: bool, line: usize, glob: bool, reexport: bool) {
        if let Some(hops) = self.krate.resolve(&self.module, path, global) {
            self.out.push(Ref {
                module: self.module.clone(),
                at: format!("{}:{line}", self.file),
                hops,
                glob,
                reexport,
                test_only: self.test_only,
            });
        }
    }

    /// Macro arguments are tokens, not syntax: any `a::b::c` in them counts as a path (so
    /// `format!("{:?}", std::thread::current())` cannot hide one). Method names after `.`
    /// are skipped.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let toks: Vec<TokenTree> = tokens.into_iter().collect();
        let colons = |i: usize| {
            matches!((toks.get(i), toks.get(i + 1)), (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
        };
        let mut i = 0;
        while i < toks.len() {
            let after_dot =
                i > 0 && matches!(&toks[i - 1], TokenTree::Punct(p) if p.as_char() == '.');
            let global = colons(i);
            let start = if global { i + 2 } else { i };
            match (&toks[i], toks.get(start)) {
                (TokenTree::Group(g), _) => self.scan_tokens(g.stream()),
                (_, Some(TokenTree::Ident(first))) if !after_dot => {
                    let line = first.span().start().line;
                    let mut path = vec![first.to_string()];
                    let mut j = start + 1;
                    while colons(j) {
                        let Some(TokenTree::Ident(next)) = toks.get(j + 2) else {
                            break;
                        };
                        path.push(next.to_string());
                        j += 3;
                    }
                    self.record(&path, global, line, false, false);
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }

    fn with_test_flag(&mut self, attrs: &[syn::Attribute], f: impl FnOnce(&mut Self)) {
        let saved = self.test_only;
        self.test_only |= is_test(attrs);
        f(self);
        self.test_only = saved;
    }
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        let attrs = item_attrs(i);
        self.with_test_flag(attrs, |v| visit::visit_item(v, i));
    }

    fn visit_impl_item_fn(&mut self, i: &'ast syn::ImplItemFn) {
        self.with_test_flag(&i.attrs, |v| visit::visit_impl_item_fn(v, i));
    }

    fn visit_item_mod(&mut self, i: &'ast syn::ItemMod) {
        // An out-of-line module is its own file, visited with its own module path.
        if let Some((_, items)) = &i.content {
            self.module.push(i.ident.to_string());
            items.iter().for_each(|item| self.visit_item(item));
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, i: &'ast syn::ItemUse) {
        let reexport = !matches!(i.vis, syn::Visibility::Inherited);
        for (path, name, line) in flatten(&i.tree) {
            self.record(
                &path,
                i.leading_colon.is_some(),
                line,
                name.is_none(),
                reexport,
            );
        }
    }

    fn visit_item_extern_crate(&mut self, i: &'ast syn::ItemExternCrate) {
        let line = i.ident.span().start().line;
        self.record(&[i.ident.to_string()], true, line, false, false);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Segs = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(first) = p.segments.first() {
            let line = first.ident.span().start().line;
            self.record(&segs, p.leading_colon.is_some(), line, false, false);
        }
        visit::visit_path(self, p);
    }

    fn visit_expr_path(&mut self, e: &'ast syn::ExprPath) {
        // `<Instant>::now()` is `Instant::now()` spelled with a qualified self type.
        if let Some(q) = e.qself.as_ref().filter(|q| q.position == 0) {
            if let syn::Type::Path(t) = &*q.ty {
                let segs = t.path.segments.iter().chain(&e.path.segments);
                let segs: Segs = segs.map(|s| s.ident.to_string()).collect();
                let line = e
                    .path
                    .segments
                    .first()
                    .map_or(0, |s| s.ident.span().start().line);
                self.record(&segs, t.path.leading_colon.is_some(), line, false, false);
            }
        }
        visit::visit_expr_path(self, e);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // A bare `leak!()` may be another module's `#[macro_export]` macro.
        if let Some(name) = m.path.get_ident() {
            let root = self.krate.modules.get(&vec!["crate".to_owned()]);
            if root.is_some_and(|r| r.aliases.contains_key(&name.to_string())) {
                let path = ["crate".to_owned(), name.to_string()];
                self.record(&path, false, name.span().start().line, false, false);
            }
        }
        // A bare `thread_local!`/`include!` is std's, through the prelude.
        if let Some(name) = m
            .path
            .get_ident()
            .filter(|n| *n == "thread_local" || *n == "include")
        {
            let line = name.span().start().line;
            self.record(&["std".into(), name.to_string()], true, line, false, false);
        }
        visit::visit_macro(self, m);
        self.scan_tokens(m.tokens.clone());
    }
}

/// `#[cfg(test)]`, `#[test]`, or the test kit's `#[cfg(any(test, feature = "testkit"))]`:
/// code that never ships (no shipped build turns on `testkit`; the fuzz package and the
/// crate's dev-dependency on itself do). Any other feature gate is shipped code.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| match &a.meta {
        syn::Meta::Path(p) => p.is_ident("test"),
        syn::Meta::List(l) if l.path.is_ident("cfg") => {
            let tokens: String = l.tokens.to_string().split_whitespace().collect();
            tokens == "test" || tokens == r#"any(test,feature="testkit")"#
        }
        _ => false,
    })
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

fn item_attrs(i: &syn::Item) -> &[syn::Attribute] {
    match i {
        syn::Item::Const(x) => &x.attrs,
        syn::Item::Enum(x) => &x.attrs,
        syn::Item::ExternCrate(x) => &x.attrs,
        syn::Item::Fn(x) => &x.attrs,
        syn::Item::ForeignMod(x) => &x.attrs,
        syn::Item::Impl(x) => &x.attrs,
        syn::Item::Macro(x) => &x.attrs,
        syn::Item::Mod(x) => &x.attrs,
        syn::Item::Static(x) => &x.attrs,
        syn::Item::Struct(x) => &x.attrs,
        syn::Item::Trait(x) => &x.attrs,
        syn::Item::TraitAlias(x) => &x.attrs,
        syn::Item::Type(x) => &x.attrs,
        syn::Item::Union(x) => &x.attrs,
        syn::Item::Use(x) => &x.attrs,
        _ => &[],
    }
}
