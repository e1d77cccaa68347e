//! A small `#ifdef`-style WGSL preprocessor: valued defines become `const` declarations,
//! `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif` keep or drop lines, and
//! `#unroll NAME COUNT` … `#end_unroll` repeats the lines between them COUNT times (a number or
//! a valued define), the identifier NAME standing for `0u`, `1u`, … in the copies. WGSL has no
//! unroll attribute, and a CPU rasterizer turns a private array indexed by a loop counter into
//! code that visits every element on every access: unrolled, the indices are constants.

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
    let mut kept = Vec::new();
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
            kept.push(line);
        }
    }
    unroll(&kept, defines, &mut out);
    out
}

/// Appends `lines` to `out` with every `#unroll` block expanded (nested blocks too).
fn unroll(lines: &[&str], defines: &Defines, out: &mut String) {
    let mut i = 0;
    while i < lines.len() {
        let Some(spec) = lines[i].trim_start().strip_prefix("#unroll ") else {
            out.push_str(lines[i]);
            out.push('\n');
            i += 1;
            continue;
        };
        let mut words = spec.split_whitespace();
        let (name, count) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let count: u32 = defines
            .0
            .get(count)
            .map_or(count, |v| v.trim_end_matches('u'))
            .parse()
            .unwrap_or_else(|_| panic!("#unroll {name}: count {count:?} is not a number"));
        // The block's end: the #end_unroll at depth 0.
        let mut depth = 0;
        let mut end = i + 1;
        while end < lines.len() {
            let t = lines[end].trim_start();
            if t.starts_with("#unroll ") {
                depth += 1;
            } else if t.starts_with("#end_unroll") {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            end += 1;
        }
        assert!(end < lines.len(), "#unroll {name} has no #end_unroll");
        for k in 0..count {
            let copy: Vec<String> = lines[i + 1..end]
                .iter()
                .map(|l| replace_ident(l, name, &format!("{k}u")))
                .collect();
            let refs: Vec<&str> = copy.iter().map(String::as_str).collect();
            unroll(&refs, defines, out);
        }
        i = end + 1;
    }
}

/// `line` with each whole identifier `name` replaced by `with`.
fn replace_ident(line: &str, name: &str, with: &str) -> String {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find(|c: char| is_ident(c)) {
        out.push_str(&rest[..start]);
        let word_len = rest[start..]
            .find(|c: char| !is_ident(c))
            .unwrap_or(rest.len() - start);
        let word = &rest[start..start + word_len];
        out.push_str(if word == name { with } else { word });
        rest = &rest[start + word_len..];
    }
    out.push_str(rest);
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

    #[test]
    fn unrolled_blocks_nest_and_replace_whole_identifiers() {
        let src =
            "#unroll ur N\n#unroll ui 2\nx[ur * 2u + ui] = ur_2 + ui;\n#end_unroll\n#end_unroll\n";
        let d = Defines::new().uint("N", 2);
        let want = "const N = 2u;\nx[0u * 2u + 0u] = ur_2 + 0u;\nx[0u * 2u + 1u] = ur_2 + 1u;\n\
                    x[1u * 2u + 0u] = ur_2 + 0u;\nx[1u * 2u + 1u] = ur_2 + 1u;\n";
        assert_eq!(preprocess(src, &d), want);
    }
}
