//! Kubernetes NetworkPolicy conformance: every case in `shared/conformance/netpol/cases` runs on a
//! fresh lab built from the suite's topology, step by step, and after each step every probe's
//! reachability matrix must match the case's, pair by pair (the diagonal is not judged).

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use plexus_e2e::{LabGuard, TempFile};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value as Json};
use serde_yaml::Value as Yaml;

/// The conformance suite, in `shared/` beside the checkout.
const SUITE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/netpol"
);

/// Row (from) and column (to) order of every matrix in the cases.
const PODS: [&str; 9] = [
    "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c",
];

/// Per-probe timeout given to `lab matrix`; a blocked TCP probe waits this long.
const PROBE_TIMEOUT_MS: &str = "1000";

/// Prefix of the labs this suite brings up (their namespaces are `plx-npc...`).
const LAB_PREFIX: &str = "npc";

/// Expected or observed reachability: `grid[from][to]`, indices into [`PODS`].
type Grid = [[bool; PODS.len()]; PODS.len()];

// ---------------------------------------------------------------------------------------------
// The case files
// ---------------------------------------------------------------------------------------------

/// One case file. Unknown fields are errors, so nothing in a case is silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// Kebab-case name.
    name: String,
    /// Title of the upstream e2e test.
    source: String,
    /// Applied in order, each on top of the previous.
    steps: Vec<Step>,
}

/// One step: apply objects, delete objects, then probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    /// Objects to create or replace (policies, or a Pod/Namespace re-applied with new labels).
    #[serde(default)]
    apply: Vec<Yaml>,
    /// Objects to delete, by kind and name.
    #[serde(default)]
    delete: Vec<ObjectRef>,
    /// Matrices to check once the step is applied.
    #[serde(default)]
    probes: Vec<Probe>,
}

/// An object named for deletion.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectRef {
    /// Kubernetes kind, e.g. `NetworkPolicy`.
    kind: String,
    /// Namespace; absent for cluster-scoped kinds.
    #[serde(default)]
    namespace: Option<String>,
    /// Object name.
    name: String,
}

/// One probe of every ordered pair of pods, with the expected outcome.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe {
    /// Destination port.
    port: u16,
    /// Protocol spoken.
    protocol: Protocol,
    /// Expected reachability.
    #[serde(deserialize_with = "matrix")]
    matrix: Grid,
}

/// The protocols the lab probes with.
#[derive(Clone, Copy, Debug, Deserialize)]
enum Protocol {
    /// A probe succeeds when the connection is accepted.
    #[serde(rename = "TCP")]
    Tcp,
    /// A probe succeeds when the pod's answer comes back.
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

fn matrix<'de, D: Deserializer<'de>>(d: D) -> Result<Grid, D::Error> {
    let text = String::deserialize(d)?;
    parse_matrix(&text).map_err(serde::de::Error::custom)
}

/// Reads a matrix: one row per line, `.` (connects) or `X` (blocked) per column, in [`PODS`]
/// order. Text after `#` and blank lines are ignored; anything else is an error, so a typo can
/// never shift a column.
fn parse_matrix(text: &str) -> Result<Grid, String> {
    let mut grid: Grid = [[false; PODS.len()]; PODS.len()];
    let mut rows = 0;
    for (n, line) in text.lines().enumerate() {
        let cells = line.split('#').next().unwrap_or("");
        if cells.trim().is_empty() {
            continue;
        }
        if rows == PODS.len() {
            return Err(format!(
                "matrix line {}: more than {} rows",
                n + 1,
                PODS.len()
            ));
        }
        let tokens: Vec<&str> = cells.split_whitespace().collect();
        if tokens.len() != PODS.len() {
            return Err(format!(
                "matrix line {}: {} cells, expected {} ({})",
                n + 1,
                tokens.len(),
                PODS.len(),
                PODS.join(" ")
            ));
        }
        for (col, token) in tokens.iter().enumerate() {
            grid[rows][col] = match *token {
                "." => true,
                "X" => false,
                other => {
                    return Err(format!(
                        "matrix line {}: cell {other:?} is neither '.' nor 'X'",
                        n + 1
                    ))
                }
            };
        }
        rows += 1;
    }
    if rows != PODS.len() {
        return Err(format!("matrix has {rows} rows, expected {}", PODS.len()));
    }
    Ok(grid)
}

impl ObjectRef {
    /// The manifest `lab delete` needs to name this object.
    fn manifest(&self) -> Result<Json, String> {
        match (self.kind.as_str(), self.namespace.as_deref()) {
            ("NetworkPolicy", Some(ns)) => Ok(json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": self.name, "namespace": ns},
                "spec": {"podSelector": {}},
            })),
            ("Namespace", None) => Ok(json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": self.name},
            })),
            (kind, ns) => Err(format!(
                "the harness cannot delete {kind} {}{}: it knows namespaced NetworkPolicy and \
                 cluster-scoped Namespace",
                ns.map(|n| format!("{n}/")).unwrap_or_default(),
                self.name
            )),
        }
    }
}

/// `Kind ns/name` of a manifest, for messages.
fn describe(object: &Yaml) -> String {
    let s = |v: &Yaml| v.as_str().unwrap_or("?").to_string();
    let meta = &object["metadata"];
    match meta["namespace"].as_str() {
        Some(ns) => format!("{} {ns}/{}", s(&object["kind"]), s(&meta["name"])),
        None => format!("{} {}", s(&object["kind"]), s(&meta["name"])),
    }
}

/// The cases directory; panics when the suite is not beside the checkout.
fn cases_dir() -> PathBuf {
    let dir = Path::new(SUITE_DIR).join("cases");
    assert!(
        dir.is_dir(),
        "conformance cases not found at {}: the suite lives in shared/ beside the checkout",
        dir.display()
    );
    dir
}

/// Reads and validates a case: matrices parse, every deletion can be expressed.
fn load_case(path: &Path) -> Result<Case, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let case: Case = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if case.steps.iter().all(|s| s.probes.is_empty()) {
        return Err(format!("{}: no step has a probe", path.display()));
    }
    for (i, step) in case.steps.iter().enumerate() {
        for d in &step.delete {
            d.manifest()
                .map_err(|e| format!("{}: step {}: {e}", path.display(), i + 1))?;
        }
    }
    Ok(case)
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

/// What the lab saw on one probe: the grid, and per pair the probe's error or reply.
struct Observed {
    grid: Grid,
    detail: Vec<Vec<String>>,
}

/// Reads `plexus lab matrix --json` output into [`PODS`] order.
fn observe(v: &Json) -> Result<Observed, String> {
    let pods: Vec<&str> = v["pods"]
        .as_array()
        .ok_or("no \"pods\" array")?
        .iter()
        .map(|p| p.as_str().unwrap_or_default())
        .collect();
    let index: Vec<usize> = PODS
        .iter()
        .map(|want| {
            pods.iter()
                .position(|p| p == want)
                .ok_or_else(|| format!("pod {want} missing from the lab's pods {pods:?}"))
        })
        .collect::<Result<_, _>>()?;
    let matrix = v["matrix"].as_array().ok_or("no \"matrix\" array")?;
    let mut details: HashMap<(&str, &str), String> = HashMap::new();
    for r in v["results"].as_array().ok_or("no \"results\" array")? {
        let (Some(from), Some(to)) = (r["from"].as_str(), r["to"].as_str()) else {
            return Err(format!("result without from/to: {r}"));
        };
        let d = match (r["error"].as_str(), r["reply"].as_str()) {
            (Some(e), _) => format!("error: {e}"),
            (None, Some(reply)) => format!("reply from {reply}"),
            (None, None) => String::new(),
        };
        details.insert((from, to), d);
    }
    let mut grid: Grid = [[false; PODS.len()]; PODS.len()];
    let mut detail = vec![vec![String::new(); PODS.len()]; PODS.len()];
    for (i, &fi) in index.iter().enumerate() {
        for (j, &tj) in index.iter().enumerate() {
            grid[i][j] = matrix
                .get(fi)
                .and_then(|row| row.get(tj))
                .and_then(Json::as_bool)
                .ok_or_else(|| format!("matrix has no boolean at [{fi}][{tj}]"))?;
            detail[i][j] = details
                .get(&(PODS[i], PODS[j]))
                .cloned()
                .unwrap_or_else(|| "no result reported".into());
        }
    }
    Ok(Observed { grid, detail })
}

fn cell(ok: bool) -> char {
    if ok {
        '.'
    } else {
        'X'
    }
}

/// Expected and observed side by side, wrong cells starred in the observed grid, then one line
/// per wrong pair with the probe's error or reply.
fn grid_diff(expected: &Grid, got: &Observed) -> (usize, String) {
    let header: String = PODS.iter().map(|p| format!("{p} ")).collect();
    let mut out = String::new();
    let _ = writeln!(out, "         {:<w$}   got", "expected", w = header.len());
    let _ = writeln!(out, "         {header}   {}", header.trim_end());
    let mut wrong = Vec::new();
    for (i, (from, (want_row, got_row))) in
        PODS.iter().zip(expected.iter().zip(&got.grid)).enumerate()
    {
        let mut left = String::new();
        let mut right = String::new();
        for (j, (&e, &g)) in want_row.iter().zip(got_row).enumerate() {
            if i == j {
                left.push_str(" -  ");
                right.push_str(" -  ");
                continue;
            }
            let _ = write!(left, " {}  ", cell(e));
            let _ = write!(right, " {}{} ", cell(g), if e == g { ' ' } else { '*' });
            if e != g {
                wrong.push((i, j));
            }
        }
        let _ = writeln!(out, "    {from}  {left}   {}", right.trim_end());
    }
    for &(i, j) in &wrong {
        let (e, g) = (expected[i][j], got.grid[i][j]);
        let _ = writeln!(
            out,
            "    {} -> {}: expected {} ({}), got {} ({})",
            PODS[i],
            PODS[j],
            cell(e),
            if e { "connects" } else { "blocked" },
            cell(g),
            got.detail[i][j]
        );
    }
    (wrong.len(), out)
}

/// Writes `objects` as one multi-document YAML file.
fn manifest_file(name: &str, objects: &[String]) -> TempFile {
    TempFile::yaml(name, &objects.join("---\n"))
}

/// Runs `plexus lab VERB -f FILE`; the CLI's output on failure.
fn lab_files(lab: &LabGuard, verb: &str, file: &TempFile) -> Result<(), String> {
    let path = file.0.display().to_string();
    let r = lab.plexus(&["lab", verb, "-f", &path]);
    if r.ok {
        return Ok(());
    }
    let manifest = std::fs::read_to_string(&file.0).unwrap_or_default();
    Err(format!(
        "`plexus lab {verb}` failed ({}):\n{}{}\n    manifest:\n{}",
        exit(r.code),
        indent(r.stderr.trim_end()),
        if r.stdout.trim().is_empty() {
            String::new()
        } else {
            format!("\n{}", indent(r.stdout.trim_end()))
        },
        indent(manifest.trim_end())
    ))
}

/// Says which probes a failed change leaves unchecked (step `s`, 0-based, of `steps`).
fn not_run(s: usize, steps: usize) -> String {
    let later = match steps - (s + 1) {
        0 => String::new(),
        1 => format!(" and step {steps}"),
        _ => format!(" and steps {}..{steps}", s + 2),
    };
    format!("    (this step's probes{later} not run: they build on this change)")
}

/// The exit of a command, for messages.
fn exit(code: Option<i32>) -> String {
    code.map(|c| format!("exit {c}"))
        .unwrap_or_else(|| "killed by a signal".into())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs one case file on a fresh lab and panics with every mismatch of every step.
fn run_case(path: &Path) {
    let file = path.file_name().unwrap_or_default().to_string_lossy();
    let case = load_case(path).unwrap_or_else(|e| panic!("{e}"));
    let topology = Path::new(SUITE_DIR).join("topology.yaml");
    let lab = LabGuard::up(LAB_PREFIX, &[&topology]);

    let steps = case.steps.len();
    let mut problems: Vec<String> = Vec::new();
    let mut probes_run = 0;
    'steps: for (s, step) in case.steps.iter().enumerate() {
        let mut what: Vec<String> = step
            .apply
            .iter()
            .map(|o| format!("apply {}", describe(o)))
            .collect();
        what.extend(step.delete.iter().map(|d| {
            format!(
                "delete {} {}{}",
                d.kind,
                d.namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default(),
                d.name
            )
        }));
        if what.is_empty() {
            what.push("no changes".into());
        }
        let title = format!("step {} of {steps} [{}]", s + 1, what.join(", "));

        if !step.apply.is_empty() {
            let docs: Vec<String> = step
                .apply
                .iter()
                .map(|o| serde_yaml::to_string(o).expect("a YAML value serialises"))
                .collect();
            let f = manifest_file(&format!("step{}-apply.yaml", s + 1), &docs);
            if let Err(e) = lab_files(&lab, "apply", &f) {
                problems.push(format!("{title}: {e}\n{}", not_run(s, steps)));
                break 'steps;
            }
        }
        if !step.delete.is_empty() {
            let docs: Vec<String> = step
                .delete
                .iter()
                .map(|d| {
                    let m = d.manifest().expect("validated by load_case");
                    serde_yaml::to_string(&m).expect("a JSON value serialises")
                })
                .collect();
            let f = manifest_file(&format!("step{}-delete.yaml", s + 1), &docs);
            if let Err(e) = lab_files(&lab, "delete", &f) {
                problems.push(format!("{title}: {e}\n{}", not_run(s, steps)));
                break 'steps;
            }
        }

        for probe in &step.probes {
            probes_run += 1;
            let port = probe.port.to_string();
            let proto = probe.protocol.as_str();
            let label = format!("{title}, probe {proto} port {port}");
            let r = lab.plexus(&[
                "lab",
                "matrix",
                "--port",
                &port,
                "--protocol",
                proto,
                "--timeout-ms",
                PROBE_TIMEOUT_MS,
                "--json",
            ]);
            if !r.ok {
                problems.push(format!(
                    "{label}: `plexus lab matrix` failed ({}):\n{}",
                    exit(r.code),
                    indent(r.stderr.trim_end())
                ));
                continue;
            }
            let observed = serde_json::from_str::<Json>(&r.stdout)
                .map_err(|e| format!("not JSON ({e})"))
                .and_then(|v| observe(&v));
            let observed = match observed {
                Ok(o) => o,
                Err(e) => {
                    problems.push(format!(
                        "{label}: unreadable `plexus lab matrix --json` output: {e}\n{}",
                        indent(r.stdout.trim_end())
                    ));
                    continue;
                }
            };
            let (wrong, diff) = grid_diff(&probe.matrix, &observed);
            if wrong > 0 {
                let pairs = PODS.len() * (PODS.len() - 1);
                problems.push(format!(
                    "{label}: {wrong} of {pairs} pairs wrong ('.' connects, 'X' blocked, \
                     '-' self, not judged; '*' wrong)\n{diff}"
                ));
            }
        }
    }
    drop(lab);

    assert!(
        problems.is_empty(),
        "NetworkPolicy conformance case {file} ({}: {:?}) failed, {} problem(s) in {probes_run} \
         probe(s) run; rows = from, columns = to:\n\n{}",
        case.name,
        case.source,
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// One test per case file
// ---------------------------------------------------------------------------------------------

/// One `#[test]` per case file, and the list [`every_case_file_has_a_test`] checks against.
macro_rules! cases {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_case(&cases_dir().join($file));
            }
        )*

        /// Every case file with a test above.
        const CASE_FILES: &[&str] = &[$($file),*];
    };
}

cases! {
    case_001_default_deny_ingress => "001-default-deny-ingress.yaml",
    case_002_default_deny_all => "002-default-deny-all.yaml",
    case_003_allow_from_same_ns_podselector => "003-allow-from-same-ns-podselector.yaml",
    case_006_allow_from_other_ns_nsselector => "006-allow-from-other-ns-nsselector.yaml",
    case_009_podselector_or_nsselector => "009-podselector-or-nsselector.yaml",
    case_010_podselector_and_nsselector => "010-podselector-and-nsselector.yaml",
    case_014_ports => "014-ports.yaml",
    case_017_ingress_one_named_port => "017-ingress-one-named-port.yaml",
    case_019_egress_one_named_port => "019-egress-one-named-port.yaml",
    case_020_updated_policy => "020-updated-policy.yaml",
    case_025_deny_egress_podselector => "025-deny-egress-podselector.yaml",
    case_027_ingress_egress_together => "027-ingress-egress-together.yaml",
    case_030_ingress_any_port_specific_protocol => "030-ingress-any-port-specific-protocol.yaml",
    case_033_stop_enforcing_after_delete => "033-stop-enforcing-after-delete.yaml",
    case_037_udp_only_policy_blocks_tcp => "037-udp-only-policy-blocks-tcp.yaml",
    case_041_udp_ports => "041-udp-ports.yaml",
}

/// A case added to the suite without a test above would never run: fail instead.
#[test]
fn every_case_file_has_a_test() {
    let listed: BTreeSet<&str> = CASE_FILES.iter().copied().collect();
    assert_eq!(listed.len(), CASE_FILES.len(), "a case is listed twice");
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(cases_dir()).expect("reading the cases directory") {
        let entry = entry.expect("cases directory entry");
        on_disk.insert(entry.file_name().to_string_lossy().into_owned());
    }
    let untested: Vec<&String> = on_disk
        .iter()
        .filter(|f| !listed.contains(f.as_str()))
        .collect();
    let missing: Vec<&&str> = listed.iter().filter(|f| !on_disk.contains(**f)).collect();
    assert!(
        untested.is_empty() && missing.is_empty(),
        "case files without a test (add them to `cases!` in {}): {untested:?}; \
         tests without a case file: {missing:?}",
        file!()
    );
}

/// Every case file reads, with well-formed matrices, before any lab is involved.
#[test]
fn every_case_file_parses() {
    for file in CASE_FILES {
        let case = load_case(&cases_dir().join(file)).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            file.ends_with(&format!("-{}.yaml", case.name)),
            "{file}: name {:?} does not match the file name",
            case.name
        );
    }
}

#[test]
fn matrix_parser_reads_rows_and_ignores_comments_and_blank_lines() {
    let text = "# rows = from\n\nX X X . . . . . .  # x/a\n".to_string()
        + &". . . . . . . . .\n".repeat(8)
        + "\n# end\n";
    let grid = parse_matrix(&text).expect("parses");
    assert_eq!(
        grid[0],
        [false, false, false, true, true, true, true, true, true]
    );
    assert!(grid[1..].iter().all(|r| r.iter().all(|c| *c)));
}

#[test]
fn matrix_parser_rejects_malformed_matrices() {
    let row = ". . . . . . . . .\n";
    let bad_token = "x . . . . . . . .\n".to_string() + &row.repeat(8);
    assert!(parse_matrix(&bad_token)
        .unwrap_err()
        .contains("neither '.' nor 'X'"));
    let short_row = ". . . . . . . .\n".to_string() + &row.repeat(8);
    assert!(parse_matrix(&short_row).unwrap_err().contains("8 cells"));
    assert!(parse_matrix(&row.repeat(8)).unwrap_err().contains("8 rows"));
    assert!(parse_matrix(&row.repeat(10))
        .unwrap_err()
        .contains("more than 9 rows"));
}

/// A one-step case with no changes, probing TCP 81 and UDP 80 against `matrix` (9 rows).
fn self_check_case(matrix: &str) -> TempFile {
    let rows: String = matrix.lines().map(|l| format!("      {l}\n")).collect();
    TempFile::yaml(
        "000-harness-self-check.yaml",
        &format!(
            "name: harness-self-check\nsource: \"the harness itself\"\nsteps:\n- probes:\n  \
             - port: 81\n    protocol: TCP\n    matrix: |\n{rows}  \
             - port: 80\n    protocol: UDP\n    matrix: |\n{rows}"
        ),
    )
}

/// With no policy every pod reaches every pod, so a case expecting that (as the first step of
/// 020-updated-policy does) passes: pod order, the diagonal and the JSON are read right.
#[test]
fn harness_passes_a_case_the_lab_meets() {
    let case = self_check_case(&". . . . . . . . .\n".repeat(9));
    run_case(&case.0);
}

/// An expectation the lab does not meet fails, naming every wrong pair and the probe's outcome.
#[test]
fn harness_reports_every_wrong_pair() {
    let mut rows = [". . . . . . . . ."; 9];
    rows[1] = ". . . . X . . . ."; // x/b -> y/b
    rows[8] = "X . . . . . . . ."; // z/c -> x/a
    let case = self_check_case(&rows.join("\n"));
    let err = std::panic::catch_unwind(|| run_case(&case.0))
        .expect_err("a case the lab does not meet must fail");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| "panic without a message".into());
    assert_eq!(msg.matches("2 of 72 pairs wrong").count(), 2, "{msg}");
    for line in [
        "x/b -> y/b: expected X (blocked), got . (reply from y/b)",
        "z/c -> x/a: expected X (blocked), got . (reply from x/a)",
    ] {
        assert_eq!(msg.matches(line).count(), 2, "{line:?} in:\n{msg}");
    }
}
