//! A small `#ifdef`-style WGSL preprocessor: valued defines become `const` declarations,
//! `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif` keep or drop lines.

use std::collections::BTreeMap;

/// A shader variant's defines, kept sorted by name so equal variants are equal keys. A flag
/// (empty value) only answers `#ifdef`; a valued define also becomes a WGSL `const`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Defines(BTreeMap<&'static str, String>);

impl Defines {
    pub fn new() -> Self {
        Self::default()
    }

    /// With the flag `name`.
    pub fn flag(self, name: &'static str) -> Self {
        self.flag_if(true, name)
    }

    /// With the flag `name` where `on`.
    pub fn flag_if(mut self, on: bool, name: &'static str) -> Self {
        if on {
            self.0.insert(name, String::new());
        }
        self
    }

    /// With `const name = <value>u;`.
    pub fn uint(mut self, name: &'static str, value: u32) -> Self {
        self.0.insert(name, format!("{value}u"));
        self
    }

    /// With every define of `other` too.
    pub fn with(mut self, other: &Defines) -> Self {
        self.0.extend(other.0.iter().map(|(k, v)| (*k, v.clone())));
        self
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Expands `source` under `defines`.
pub fn preprocess(source: &str, defines: &Defines) -> String {
    let mut out = String::with_capacity(source.len() + 256);
    for (name, value) in &defines.0 {
        if !value.is_empty() {
            out.push_str(&format!("const {name} = {value};\n"));
        }
    }
    let defined = |n: &str| defines.contains(n);
    // Each stack entry: (this branch active, parent active).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &Vec<(bool, bool)>| stack.last().is_none_or(|&(a, p)| a && p);
    for line in source.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("#ifdef ") {
            let parent = active(&stack);
            stack.push((defined(rest.trim()), parent));
        } else if let Some(rest) = t.strip_prefix("#ifndef ") {
            let parent = active(&stack);
            stack.push((!defined(rest.trim()), parent));
        } else if t.starts_with("#else") {
            if let Some(top) = stack.last_mut() {
                top.0 = !top.0;
            }
        } else if t.starts_with("#endif") {
            stack.pop();
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_conditionals_and_consts() {
        let src = "a\n#ifdef X\nb\n#ifndef Y\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf\n";
        let d = Defines::new().flag("X").uint("WG", 8);
        assert_eq!(preprocess(src, &d), "const WG = 8u;\na\nb\nc\nf\n");
        assert_eq!(preprocess(src, &Defines::new()), "a\ne\nf\n");
    }
}
