//! Kubernetes identity from a cgroup path, for the cgroupfs layout
//! (`/kubepods/burstable/pod<uid>/<container id>`) and the systemd layout
//! (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`,
//! also `docker-<id>.scope` and `crio-<id>.scope`).

use memgap_collector::bundle;

use crate::reader::Files;
use crate::{parse, FastMap};

use serde::Serialize;
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct K8s {
    /// `kubepods`, `qos`, `pod` or `container`.
    pub level: &'static str,
    /// `guaranteed`, `burstable` or `besteffort` (pods directly under kubepods are guaranteed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<&'static str>,
    /// The pod UID and container ID are shared with the bundle's name lists when they are in
    /// them (no copy per cgroup), the runtime's usual names are constants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Cow<'static, str>>,
    /// The names are shared with the bundle's name lists (a pod's names are every one of its
    /// cgroups' names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Arc<str>>,
}

fn qos_of(s: &str) -> Option<&'static str> {
    match s {
        "burstable" => Some("burstable"),
        "besteffort" => Some("besteffort"),
        "guaranteed" => Some("guaranteed"),
        _ => None,
    }
}

/// The identity of a cgroup path, or `None` outside `kubepods`, without names.
pub fn identify(path: &str) -> Option<K8s> {
    Names::default().identify(path)
}

/// The runtime's name, a constant for the usual ones.
fn runtime(name: &str) -> Cow<'static, str> {
    match name {
        "cri-containerd" => Cow::Borrowed("cri-containerd"),
        "docker" => Cow::Borrowed("docker"),
        "crio" => Cow::Borrowed("crio"),
        other => Cow::Owned(other.to_string()),
    }
}

/// A path's identity without names, its pod UID and its container as `(runtime, id)`.
type Parsed<'p> = (
    K8s,
    Option<Cow<'p, str>>,
    Option<(Option<&'p str>, &'p str)>,
);

/// What a path says of a cgroup's identity.
fn parse(path: &str) -> Option<Parsed<'_>> {
    let mut comps = components(path);
    comps.find(|c| *c == "kubepods" || *c == "kubepods.slice")?;
    // At most QoS, pod and container follow.
    let rest = [comps.next(), comps.next(), comps.next()];
    let mut id = K8s {
        level: "kubepods",
        ..Default::default()
    };
    let mut i = 0;
    if let Some(c) = rest[0] {
        let q = c
            .strip_prefix("kubepods-")
            .and_then(|c| c.strip_suffix(".slice"))
            .unwrap_or(c);
        if let Some(q) = qos_of(q) {
            id.qos = Some(q);
            id.level = "qos";
            i = 1;
        }
    }
    let Some(pod) = rest[i] else {
        return Some((id, None, None));
    };
    let uid = match pod.strip_prefix("pod") {
        Some(u) => Cow::Borrowed(u),
        // kubepods-burstable-pod<uid>.slice or kubepods-pod<uid>.slice, the UID's dashes
        // written as underscores.
        None => match pod
            .strip_suffix(".slice")
            .and_then(|p| p.rsplit_once("pod"))
        {
            Some((_, u)) if u.contains('_') => Cow::Owned(u.replace('_', "-")),
            Some((_, u)) => Cow::Borrowed(u),
            None => return None,
        },
    };
    if id.qos.is_none() {
        id.qos = Some("guaranteed");
    }
    id.level = "pod";
    let container = rest[i + 1].map(|c| {
        id.level = "container";
        let c = c.strip_suffix(".scope").unwrap_or(c);
        match memchr::memrchr(b'-', c.as_bytes()) {
            Some(dash) if c.len() - dash > 12 => (Some(&c[..dash]), &c[dash + 1..]),
            _ => (None, c),
        }
    });
    Some((id, Some(uid), container))
}

/// The non-empty components of a path (`split('/')`'s searcher cost more than `memchr`).
fn components(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = path;
    std::iter::from_fn(move || loop {
        let end = memchr::memchr(b'/', rest.as_bytes()).unwrap_or(rest.len());
        let (c, after) = rest.split_at(end);
        if after.is_empty() && c.is_empty() {
            return None;
        }
        rest = after.get(1..).unwrap_or_default();
        if !c.is_empty() {
            return Some(c);
        }
    })
}

/// The names a bundle holds for pods (from `/var/log/pods`, by pod UID) and containers (from
/// `/var/log/containers`, by container ID).
#[derive(Debug, Default)]
pub struct Names {
    pods: Option<PodNames>,
    containers: Option<ContainerNames>,
}

/// Pod UID -> (namespace, pod, its containers' names).
pub type PodNames = FastMap<Arc<str>, (Arc<str>, Arc<str>, Vec<Arc<str>>)>;
/// Container ID -> (namespace, pod, container).
pub type ContainerNames = FastMap<Arc<str>, (Arc<str>, Arc<str>, Arc<str>)>;

impl Names {
    pub fn read(files: &Files) -> Names {
        let mut shared = Shared::default();
        Names {
            pods: files
                .get(bundle::PODS_FILE)
                .map(|t| pod_names_with(&parse::text(t), &mut shared)),
            containers: files
                .get(bundle::CONTAINERS_FILE)
                .map(|t| container_names_with(&parse::text(t), &mut shared)),
        }
    }

    /// The identity of a cgroup path (`None` outside `kubepods`), with the namespace, pod and
    /// container names: from its pod's directory first, then from its container's log link.
    pub fn identify(&self, path: &str) -> Option<K8s> {
        let (mut id, uid, container) = parse(path)?;
        if let Some(uid) = uid {
            let pod = self.pods.as_ref().and_then(|p| p.get_key_value(&*uid));
            id.pod_uid = Some(pod.map_or_else(|| uid.into(), |(k, _)| Arc::clone(k)));
            if let Some((_, (ns, pod, containers))) = pod {
                id.namespace = Some(ns.clone());
                id.pod = Some(pod.clone());
                if container.is_some() && containers.len() == 1 {
                    id.container = Some(containers[0].clone());
                }
            }
        }
        if let Some((rt, cid)) = container {
            id.runtime = rt.map(runtime);
            let named = self.containers.as_ref().and_then(|n| n.get_key_value(cid));
            id.container_id = Some(named.map_or_else(|| cid.into(), |(k, _)| Arc::clone(k)));
            if let Some((_, (ns, pod, container))) = named {
                id.namespace.get_or_insert_with(|| ns.clone());
                id.pod.get_or_insert_with(|| pod.clone());
                id.container = Some(container.clone());
            }
        }
        Some(id)
    }
}

/// Names that recur through both lists (namespaces, pod names, container names), one string
/// each: a node has a few namespaces and container names, each pod's name is in both lists,
/// and a string apiece was ~8,000 allocations for 1,700 pods.
#[derive(Default)]
struct Shared(crate::FastSet<Arc<str>>);

impl Shared {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(s) = self.0.get(name) {
            return Arc::clone(s);
        }
        let s: Arc<str> = name.into();
        self.0.insert(Arc::clone(&s));
        s
    }
}

/// Pod names from `memgap/pods.txt` (`<namespace>_<pod>_<uid>/<container>` lines): uid ->
/// (namespace, pod, container names).
pub fn pod_names(text: &str) -> PodNames {
    pod_names_with(text, &mut Shared::default())
}

fn pod_names_with(text: &str, shared: &mut Shared) -> PodNames {
    let mut out = PodNames::default();
    for line in crate::parse::lines(text) {
        let (pod_dir, container) = match split_once(line, b'/') {
            Some((p, c)) => (p, Some(c)),
            None => (line, None),
        };
        let Some((ns, (pod, uid))) =
            split_once(pod_dir, b'_').and_then(|(ns, r)| Some((ns, split_once(r, b'_')?)))
        else {
            continue;
        };
        // The pod's first line names it; the UID is copied once per pod, not per line.
        let e = match out.get_mut(uid) {
            Some(e) => e,
            None => out
                .entry(uid.into())
                .or_insert((shared.get(ns), shared.get(pod), Vec::new())),
        };
        if let Some(c) = container.filter(|c| !c.is_empty()) {
            e.2.push(shared.get(c));
        }
    }
    out
}

/// Container names from `memgap/containers.txt` (`<pod>_<namespace>_<container>-<id>.log`):
/// container ID -> (namespace, pod, container).
pub fn container_names(text: &str) -> ContainerNames {
    container_names_with(text, &mut Shared::default())
}

fn container_names_with(text: &str, shared: &mut Shared) -> ContainerNames {
    let mut out = ContainerNames::default();
    for line in crate::parse::lines(text) {
        let Some(stem) = line.trim().strip_suffix(".log") else {
            continue;
        };
        let Some(dash) = memchr::memrchr(b'-', stem.as_bytes()) else {
            continue;
        };
        let (rest, id) = (&stem[..dash], &stem[dash + 1..]);
        let names = split_once(rest, b'_').and_then(|(pod, r)| Some((pod, split_once(r, b'_')?)));
        if let Some((pod, (ns, c))) = names {
            out.insert(id.into(), (shared.get(ns), shared.get(pod), shared.get(c)));
        }
    }
    out
}

/// `s` split at the first `sep` (an ASCII byte), as `str::split_once` with a char does.
fn split_once(s: &str, sep: u8) -> Option<(&str, &str)> {
    let at = memchr::memchr(sep, s.as_bytes())?;
    Some((&s[..at], &s[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_and_systemd_layouts() {
        let c = identify("/kubepods/burstable/pod0b6f2f2e-1111/4f3a9c2d1e0b4f3a9c2d1e0b").unwrap();
        assert_eq!(
            (c.level, c.qos, c.pod_uid.as_deref()),
            ("container", Some("burstable"), Some("0b6f2f2e-1111"))
        );
        assert_eq!(c.container_id.as_deref(), Some("4f3a9c2d1e0b4f3a9c2d1e0b"));
        let g = identify("/kubepods/pod1234").unwrap();
        assert_eq!((g.level, g.qos), ("pod", Some("guaranteed")));
        let s = identify("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7a96c459_d529_44ae_9f99_90d3798d6426.slice/cri-containerd-1d3d308a7d48a27814a68bf33a44acf4441c9c02463ca0bc1cdfdc8c0b4a8496.scope").unwrap();
        assert_eq!(
            s.pod_uid.as_deref(),
            Some("7a96c459-d529-44ae-9f99-90d3798d6426")
        );
        assert_eq!(s.runtime.as_deref(), Some("cri-containerd"));
        assert_eq!(s.container_id.as_deref().map(str::len), Some(64));
        let d = identify("/kubepods.slice/kubepods-pod11_22.slice/docker-abcdefabcdef12.scope")
            .unwrap();
        assert_eq!(
            (d.qos, d.runtime.as_deref()),
            (Some("guaranteed"), Some("docker"))
        );
        assert_eq!(
            identify("/kubepods.slice/kubepods-besteffort.slice")
                .unwrap()
                .level,
            "qos"
        );
        assert!(identify("/system.slice/kubelet.service").is_none());
        // A runtime prefix is split off only before an ID of 12 characters or more.
        let c = |p: &str| identify(p).map(|k| (k.runtime, k.container_id.unwrap_or_default()));
        assert_eq!(
            c("/kubepods/pod1/crio-0123456789ab"),
            Some((Some("crio".into()), "0123456789ab".into()))
        );
        assert_eq!(
            c("//kubepods//pod1/crio-0123456789a/"),
            Some((None, "crio-0123456789a".into()))
        );
    }

    #[test]
    fn names_fill_both_layouts_and_share_the_lists_strings() {
        let names = Names {
            pods: Some(pod_names("shop_web-1_7a96c459-d529/nginx\nkube-system_dns_0b6f-11/a\nkube-system_dns_0b6f-11/b\n")),
            containers: Some(container_names("dns_kube-system_b-0123456789abcdef.log\n")),
        };
        let slice = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7a96c459_d529.slice/cri-containerd-1d3d308a7d48a278.scope";
        let s = names.identify(slice).unwrap();
        let shown = |k: &K8s| {
            let n = |x: &Option<Arc<str>>| x.as_deref().map(str::to_string);
            (n(&k.namespace), n(&k.pod), n(&k.container), n(&k.pod_uid))
        };
        let some = |x: &str| Some(x.to_string());
        assert_eq!(
            shown(&s),
            (
                some("shop"),
                some("web-1"),
                some("nginx"),
                some("7a96c459-d529")
            )
        );
        let key =
            |uid: &str| Arc::as_ptr(names.pods.as_ref().unwrap().get_key_value(uid).unwrap().0);
        assert_eq!(
            Arc::as_ptr(s.pod_uid.as_ref().unwrap()),
            key("7a96c459-d529")
        );
        assert_eq!(s.runtime.as_deref(), Some("cri-containerd"));
        // The pod itself is not its only container.
        let pod =
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7a96c459_d529.slice";
        let p = names.identify(pod).unwrap();
        assert_eq!((p.level, shown(&p).2), ("pod", None));
        // Two containers in the pod's directory: the name comes from the container's log link.
        let c = names
            .identify("/kubepods/burstable/pod0b6f-11/0123456789abcdef")
            .unwrap();
        assert_eq!(
            shown(&c),
            (some("kube-system"), some("dns"), some("b"), some("0b6f-11"))
        );
        assert_eq!(c.container_id.as_deref(), Some("0123456789abcdef"));
        // Unknown to the lists: identified, not named.
        let u = names.identify("/kubepods/pod99/c").unwrap();
        assert_eq!(shown(&u), (None, None, None, some("99")));
        assert_eq!(u, identify("/kubepods/pod99/c").unwrap());
    }

    #[test]
    fn container_names_from_log_files() {
        let m = container_names("coredns-5d78_kube-system_coredns-0123456789abcdef.log\nweb_default_istio-proxy-ffee.log\njunk\n");
        assert_eq!(
            m["0123456789abcdef"],
            (
                "kube-system".into(),
                "coredns-5d78".into(),
                "coredns".into()
            )
        );
        assert_eq!(&*m["ffee"].2, "istio-proxy");
        assert_eq!(m.len(), 2);
        assert!(container_names("").is_empty());
    }

    #[test]
    fn pod_names_from_log_dirs() {
        let m = pod_names("kube-system_coredns-5d78_0b6f-11/coredns\nkube-system_coredns-5d78_0b6f-11\ndefault_web_aa-bb/nginx\ngarbage\n");
        assert_eq!(&*m["0b6f-11"].0, "kube-system");
        assert_eq!(m["0b6f-11"].2, vec!["coredns".into()]);
        assert_eq!(&*m["aa-bb"].1, "web");
        assert_eq!(m.len(), 2);
        // A pod's first line names it; later lines only add containers.
        let m =
            pod_names("ns_web_u1/a\nother_x_u1/b\nns_web_u1/\nns_u2\nns_p_u3_with_underscores\n");
        assert_eq!((&*m["u1"].0, &*m["u1"].1), ("ns", "web"));
        assert_eq!(m["u1"].2, vec!["a".into(), "b".into()]);
        assert_eq!(&*m["u3_with_underscores"].1, "p");
        assert!(!m.contains_key("u2") && m.len() == 2);
    }

    #[test]
    fn names_that_recur_are_one_string() {
        let mut shared = Shared::default();
        let pods = pod_names_with("ns_web_u1/app\nns_db_u2/app\n", &mut shared);
        let logs = container_names_with("web_ns_app-c1.log\n", &mut shared);
        let (u1, u2, c1) = (&pods["u1"], &pods["u2"], &logs["c1"]);
        assert!(
            Arc::ptr_eq(&u1.0, &u2.0) && Arc::ptr_eq(&u1.0, &c1.0),
            "namespaces"
        );
        assert!(Arc::ptr_eq(&u1.1, &c1.1), "a pod's name in both lists");
        assert!(
            Arc::ptr_eq(&u1.2[0], &u2.2[0]) && Arc::ptr_eq(&u1.2[0], &c1.2),
            "containers"
        );
        assert_eq!((&*c1.0, &*c1.1, &*c1.2), ("ns", "web", "app"));
    }

    proptest::proptest! {
        #[test]
        fn components_and_splits_are_the_standard_librarys(s in "[a/_-]{0,16}") {
            let std: Vec<&str> = s.split('/').filter(|c| !c.is_empty()).collect();
            proptest::prop_assert_eq!(components(&s).collect::<Vec<_>>(), std);
            for sep in [b'/', b'_', b'-'] {
                proptest::prop_assert_eq!(split_once(&s, sep), s.split_once(char::from(sep)));
            }
        }
    }
}
