//! A small `#ifdef`-style WGSL preprocessor: valued defines become `const` declarations,
//! `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif` keep or drop lines.

/// Sorted `(name, value)` pairs; an empty value is a flag for `#ifdef` only.
pub type Defines = Vec<(String, String)>;

/// Expands `source` under `defines`.
pub fn preprocess(source: &str, defines: &Defines) -> String {
    let mut out = String::with_capacity(source.len() + 256);
    for (name, value) in defines {
        if !value.is_empty() {
            out.push_str(&format!("const {name} = {value};\n"));
        }
    }
    let defined = |n: &str| defines.iter().any(|(k, _)| k == n);
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
        let d = vec![
            ("X".to_string(), String::new()),
            ("WG".to_string(), "8u".to_string()),
        ];
        assert_eq!(preprocess(src, &d), "const WG = 8u;\na\nb\nc\nf\n");
        assert_eq!(preprocess(src, &vec![]), "a\ne\nf\n");
    }
}
