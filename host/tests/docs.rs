//! The documentation's examples, run: every `curl` command in README.md and `docs/*.md` that
//! is followed by a ```json block is sent to a real `scoria up` serving `spin.toml`, and its
//! answer must match that block. So an example cannot drift from what the host answers.
//!
//! In an expected answer, `...` stands for anything (the rest of a list, a long answer), and
//! a decimal number matches any number within 0.02 of it (scores are shown rounded).

mod common;

use common::*;
use std::process::Command;

/// One example: the command as written, the answer as written, and where it is.
struct Example {
    file: String,
    line: usize,
    command: String,
    expected: String,
}

/// The `sh` block holding a single `curl` command, directly followed by a `json` block.
fn examples(file: &str, text: &str) -> Vec<Example> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for i in 0..lines.len() {
        if lines[i] != "```sh" || lines.get(i + 2) != Some(&"```") || lines.get(i + 3) != Some(&"```json") {
            continue;
        }
        let command = lines[i + 1];
        if !command.starts_with("curl ") {
            continue;
        }
        let end = (i + 4..lines.len())
            .find(|&k| lines[k] == "```")
            .unwrap_or_else(|| panic!("{file}:{}: unclosed json block", i + 4));
        let expected: String = lines[i + 4..end].iter().map(|l| l.trim()).collect();
        out.push(Example {
            file: file.to_string(),
            line: i + 2,
            command: command.to_string(),
            expected,
        });
    }
    out
}

/// The expected answer as a regular expression: literal text, `...` as anything, decimal
/// numbers captured to be compared with a tolerance. Returns the pattern and the numbers.
fn pattern(expected: &str) -> (regex::Regex, Vec<f64>) {
    let number = regex::Regex::new(r"-?[0-9]+\.[0-9]+").unwrap();
    let mut re = String::from("^");
    let mut numbers = Vec::new();
    // `, ...` in a list stands for more elements, written without the space in real JSON.
    let text = expected.replace(", ...", "...");
    for (k, part) in text.split("...").enumerate() {
        if k > 0 {
            re.push_str(".*?");
        }
        let mut last = 0;
        for m in number.find_iter(part) {
            re.push_str(&regex::escape(&part[last..m.start()]));
            re.push_str(r"(-?[0-9.eE+-]+)");
            numbers.push(m.as_str().parse().unwrap());
            last = m.end();
        }
        re.push_str(&regex::escape(&part[last..]));
    }
    re.push('$');
    (regex::Regex::new(&re).unwrap(), numbers)
}

/// Whether `answer` is what `expected` shows; `Err` says where they part.
fn matches(expected: &str, answer: &str) -> Result<(), String> {
    let (re, numbers) = pattern(expected);
    let caps = re
        .captures(answer)
        .ok_or("the answer does not have the example's shape")?;
    for (k, want) in numbers.iter().enumerate() {
        let got: f64 = caps[k + 1]
            .parse()
            .map_err(|e| format!("`{}`: {e}", &caps[k + 1]))?;
        if (got - want).abs() > 0.02 {
            return Err(format!("number {} is {got}, the example shows {want}", k + 1));
        }
    }
    Ok(())
}

#[test]
fn the_matcher_can_fail() {
    let ex = r#"{"a":"tiger cat","score":0.386,"list":[{"i":1}, ...],"x":"Convert ..."}"#;
    matches(
        ex,
        r#"{"a":"tiger cat","score":0.3861,"list":[{"i":1},{"i":2}],"x":"Convert it"}"#,
    )
    .unwrap();
    assert!(
        matches(
            ex,
            r#"{"a":"tabby","score":0.386,"list":[{"i":1}],"x":"Convert"}"#
        )
        .is_err()
    );
    assert!(
        matches(
            ex,
            r#"{"a":"tiger cat","score":0.5,"list":[{"i":1}],"x":"Convert"}"#
        )
        .is_err()
    );
    assert!(
        matches(
            ex,
            r#"{"a":"tiger cat","score":0.386,"list":[{"i":2}],"x":"Convert"}"#
        )
        .is_err()
    );
}

#[test]
fn the_examples_in_the_docs_answer_as_shown() {
    let root = root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let all: Vec<Example> = files
        .iter()
        .flat_map(|f| {
            let name = f.strip_prefix(&root).unwrap().display().to_string();
            examples(&name, &std::fs::read_to_string(f).unwrap())
        })
        .collect();
    // The README's own examples, at least: each function, and an error.
    let in_readme = all.iter().filter(|e| e.file == "README.md").count();
    assert!(in_readme >= 4, "README.md has {in_readme} checked examples");

    let s = Server::start("spin.toml", &[]);
    let address = s.base.trim_start_matches("http://");
    let mut failures = Vec::new();
    for ex in &all {
        let command = ex.command.replace("localhost:3000", address);
        let out = Command::new("bash")
            .current_dir(&root)
            .args(["-c", &format!("{command} --silent --show-error")])
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout);
        if let Err(why) = out
            .status
            .success()
            .then_some(())
            .ok_or_else(|| format!("curl failed: {}", String::from_utf8_lossy(&out.stderr)))
            .and_then(|()| matches(&ex.expected, answer.trim()))
        {
            failures.push(format!(
                "{}:{}: {}\n  {why}\n  example: {}\n  answer:  {answer}",
                ex.file, ex.line, ex.command, ex.expected
            ));
        }
    }
    s.assert_alive();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of every heading in a markdown text.
fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn every_link_between_the_docs_leads_somewhere() {
    let root = root();
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut files = vec![
        root.join("README.md"),
        root.join("deploy/README.md"),
        root.join("models/README.md"),
    ];
    files.extend(
        std::fs::read_dir(root.join("docs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for cap in link.captures_iter(&text) {
            let target = &cap[1];
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !dest.exists() {
                broken.push(format!("{}: {target}: no such file", file.display()));
            } else if !fragment.is_empty() {
                let headings = anchors(&std::fs::read_to_string(&dest).unwrap_or_default());
                if !headings.iter().any(|h| h == fragment) {
                    broken.push(format!("{}: {target}: no such heading", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_githubs() {
    assert_eq!(
        anchor(" Hot swaps and cold starts: `./dev bench swap`"),
        "hot-swaps-and-cold-starts-dev-bench-swap"
    );
    assert_eq!(
        anchor(" CUDA graphs (GPU, on by default)"),
        "cuda-graphs-gpu-on-by-default"
    );
}
