//! Rule expressions compiled to a small tree that Rust evaluates, for the conditions, bytes and
//! evidence the engine evaluates on every cgroup (minijinja's interpreter was most of the
//! rules' time). minijinja stays the reference: an expression using syntax this does not
//! compile is evaluated by minijinja, and at run time anything this does not handle exactly
//! as minijinja does (other types, overflow, undefined values, NaN) returns `None`, so the
//! engine asks minijinja. A test compares the two on every example and on real and synthetic
//! nodes.
//!
//! Compiled: numbers, strings, `true`/`false`/`none`, variables and their attributes,
//! `+ - * /`, the six comparisons, `and`/`or`/`not`, unary minus, `x if c else y`,
//! `is none`, `| default(v)` and `| length`; and templates made of text, `{% if %}` and
//! `{{ ... }}`, with memgap's own filters (`bytes`, `pct`...: the same functions) applied
//! last.
//!
//! Paths below `cg` that name a scalar fact (`cg.usage_bytes`, `cg.part.shmem`,
//! `cg.stat.KEY`) are resolved to the model's fields when rules compile
//! (`facts::Direct`), and paths outside `cg` (`node...`, `MiB`) are looked up once for all
//! cgroups.

use std::fmt::Write;

use minijinja::machinery::{ast, parse, parse_expr, WhitespaceConfig};
use minijinja::value::ValueKind;
use minijinja::Value;

use super::facts::{Direct, Read, Scalar, PART_KEYS};
use crate::model::Model;
use std::sync::Arc;

/// A value during evaluation, small and `Copy`: numbers unpacked, anything else a reference
/// to minijinja's value held by the scope or the compiled constants.
// The tag a word and every payload at offset 8: values are copied as two aligned words. With
// the default layout the payloads sat at offsets 1, 4 and 8 and each copy read bytes 1-15 as
// two overlapping words, which stalled on the stores just made (`perf`: ~40% of the tree walk).
#[derive(Debug, Clone, Copy)]
#[repr(C, u64)]
pub(crate) enum V {
    Int(i64),
    Float(f64),
    Bool(bool),
    None,
    /// A string, map, list... (`Scope::held` or `Paths::consts`).
    Obj(Ref),
    /// A missing attribute: only `default` and `is defined` may look at it.
    Undefined,
}

// The layout keeps `Option<V>` two words (the tag has spare values).
const _: () = assert!(std::mem::size_of::<Option<V>>() == 16);

#[derive(Debug, Clone, Copy)]
pub(crate) enum Ref {
    Held(u32),
    /// Held for every subject (a path outside `cg`).
    Kept(u32),
    Const(u32),
}

impl V {
    /// Unpacks a number, bool or none; `None` for anything else.
    fn scalar(v: &Value) -> Option<V> {
        Some(match v.kind() {
            ValueKind::Number if v.is_integer() => V::Int(v.as_i64()?),
            ValueKind::Number => V::Float(f64::try_from(v.clone()).ok()?),
            ValueKind::Bool => V::Bool(v.is_true()),
            ValueKind::None => V::None,
            ValueKind::Undefined => V::Undefined,
            _ => return None,
        })
    }

    /// A fact read straight from the model; `None` where minijinja's value is to be built
    /// (an object, or a number `V` does not hold).
    fn of_read(r: Read) -> Option<V> {
        match r {
            Read::Scalar(s) => V::of_scalar(s),
            Read::Undefined => Some(V::Undefined),
            Read::Object => None,
        }
    }

    /// `None` where minijinja's value would not be a number V holds (an integer beyond i64).
    fn of_scalar(s: Scalar) -> Option<V> {
        Some(match s {
            Scalar::U64(u) => V::Int(i64::try_from(u).ok()?),
            Scalar::I64(i) => V::Int(i),
            Scalar::F64(f) => V::Float(f),
            Scalar::Bool(b) => V::Bool(b),
            Scalar::None => V::None,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Lte,
    Gt,
    Gte,
}

/// A compiled expression.
#[derive(Debug)]
pub(crate) enum Expr {
    Const(V),
    /// A variable or attribute path, by its index in the `Paths` table.
    Path(usize),
    Arith(Arith, Box<Expr>, Box<Expr>),
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    /// A comparison with a constant (`cg.part.shmem >= 64 * MiB`), the commonest condition.
    CmpConst(Cmp, Box<Expr>, V),
    /// The same when the left side is a path.
    CmpPath(Cmp, usize, V),
    /// `a and b and c...`, flattened (one node however long the chain).
    And(Vec<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    IsNone(Box<Expr>),
    Default(Box<Expr>, Box<Expr>),
    Length(Box<Expr>),
}

impl Expr {
    /// Adds every path this expression looks up to `out` (not their parents: a path reached
    /// through its parent is looked up as itself first).
    pub fn paths(&self, out: &mut Vec<usize>) {
        match self {
            Expr::Const(_) => {}
            Expr::Path(i) | Expr::CmpPath(_, i, _) => out.push(*i),
            Expr::Arith(_, l, r) | Expr::Cmp(_, l, r) | Expr::Or(l, r) | Expr::Default(l, r) => {
                l.paths(out);
                r.paths(out);
            }
            Expr::CmpConst(_, x, _)
            | Expr::Not(x)
            | Expr::Neg(x)
            | Expr::IsNone(x)
            | Expr::Length(x) => x.paths(out),
            Expr::And(all) => all.iter().for_each(|x| x.paths(out)),
            Expr::If(c, t, f) => {
                c.paths(out);
                t.paths(out);
                f.paths(out);
            }
        }
    }
}

/// A compiled template: text, values and conditions.
#[derive(Debug)]
pub(crate) enum Piece {
    Raw(String),
    /// A value, through one of `super::FILTERS` (by index) if given.
    Emit(Expr, Option<usize>),
    If(Expr, Vec<Piece>, Vec<Piece>),
}

/// Every variable path the compiled expressions read (`cg`, `cg.part`, `cg.part.shmem`...),
/// each once, so a subject looks each one up once whichever rules read it.
#[derive(Debug, Default)]
pub(crate) struct Paths {
    /// (parent path, attribute name); a root has no parent.
    entries: Vec<(Option<usize>, Value)>,
    /// Per entry: how to read it straight from the model, for a path below `cg`.
    direct: Vec<Option<Direct>>,
    /// Per entry: below `cg`, so its value changes from subject to subject.
    varies: Vec<bool>,
    /// Globals of the environment (`MiB`...), for roots the context does not define.
    globals: Vec<(String, Value)>,
    /// Constants that are not numbers (strings).
    consts: Vec<Value>,
}

impl Paths {
    pub fn new(env: &minijinja::Environment<'_>) -> Paths {
        Paths {
            entries: Vec::new(),
            direct: Vec::new(),
            varies: Vec::new(),
            globals: env.globals().map(|(k, v)| (k.to_string(), v)).collect(),
            consts: Vec::new(),
        }
    }

    fn intern(&mut self, parent: Option<usize>, name: &str) -> usize {
        let found = self
            .entries
            .iter()
            .position(|(p, k)| *p == parent && k.as_str() == Some(name));
        found.unwrap_or_else(|| {
            self.entries.push((parent, Value::from(name)));
            let i = self.entries.len() - 1;
            let names = self.names(i);
            let varies = names[0] == "cg";
            let direct = match names.split_first() {
                Some((&"cg", below)) => Direct::of(below),
                _ => None,
            };
            self.varies.push(varies);
            self.direct.push(direct);
            i
        })
    }

    /// Whether path `i` is below `cg` (its value changes from subject to subject).
    pub fn varies(&self, i: usize) -> bool {
        self.varies[i]
    }

    /// The value path `i` (below `cg`) has on every cgroup of `subjects`, when it is one
    /// scalar for all of them, read straight from the model as a scope reads it; `None` when
    /// the values differ, or are not a scalar `V` holds.
    pub fn uniform(&self, i: usize, model: &Model, subjects: &[usize]) -> Option<V> {
        V::of_read(self.direct[i].as_ref()?.uniform(model, subjects)?)
    }

    /// The names along path `i`, from its root.
    fn names(&self, mut i: usize) -> Vec<&str> {
        let mut names = Vec::new();
        loop {
            let (parent, name) = &self.entries[i];
            names.push(name.as_str().unwrap_or_default());
            match parent {
                Some(p) => i = *p,
                None => break,
            }
        }
        names.reverse();
        names
    }

    /// Compiles an expression's source; `None` when it uses anything not listed above.
    pub fn compile(&mut self, source: &str) -> Option<Expr> {
        let ast = parse_expr(source).ok()?;
        self.expr(&ast)
    }

    fn expr(&mut self, e: &ast::Expr<'_>) -> Option<Expr> {
        let b = |e| Some(Box::new(e));
        Some(match e {
            ast::Expr::Const(c) => Expr::Const(match V::scalar(&c.value) {
                Some(V::Undefined) => return None,
                Some(v) => v,
                None => {
                    self.consts.push(c.value.clone());
                    V::Obj(Ref::Const(self.consts.len() as u32 - 1))
                }
            }),
            // The unit constants are constants (an example may not redefine them).
            ast::Expr::Var(v) => match super::unit(v.id) {
                Some(bytes) => Expr::Const(V::Int(i64::try_from(bytes).ok()?)),
                None => Expr::Path(self.path(e)?),
            },
            ast::Expr::GetAttr(_) => Expr::Path(self.path(e)?),
            ast::Expr::BinOp(op) => {
                let (l, r) = (self.expr(&op.left)?, self.expr(&op.right)?);
                use ast::BinOpKind as K;
                let arith_op = match op.op {
                    K::Add => Some(Arith::Add),
                    K::Sub => Some(Arith::Sub),
                    K::Mul => Some(Arith::Mul),
                    K::Div => Some(Arith::Div),
                    _ => None,
                };
                if let Some(a) = arith_op {
                    // Constant arithmetic (`64 * MiB`) is done once, here.
                    if let (Expr::Const(x), Expr::Const(y)) = (&l, &r) {
                        if let Some(v) = arith(a, *x, *y) {
                            return Some(Expr::Const(v));
                        }
                    }
                    return Some(Expr::Arith(a, b(l)?, b(r)?));
                }
                let (l, r) = (b(l)?, b(r)?);
                match op.op {
                    K::Eq => cmp(Cmp::Eq, *l, *r),
                    K::Ne => cmp(Cmp::Ne, *l, *r),
                    K::Lt => cmp(Cmp::Lt, *l, *r),
                    K::Lte => cmp(Cmp::Lte, *l, *r),
                    K::Gt => cmp(Cmp::Gt, *l, *r),
                    K::Gte => cmp(Cmp::Gte, *l, *r),
                    K::ScAnd => match *l {
                        Expr::And(mut all) => {
                            all.push(*r);
                            Expr::And(all)
                        }
                        l => Expr::And(vec![l, *r]),
                    },
                    K::ScOr => Expr::Or(l, r),
                    _ => return None,
                }
            }
            ast::Expr::UnaryOp(u) => {
                let inner = b(self.expr(&u.expr)?)?;
                match u.op {
                    ast::UnaryOpKind::Not => Expr::Not(inner),
                    ast::UnaryOpKind::Neg => Expr::Neg(inner),
                }
            }
            ast::Expr::IfExpr(i) => Expr::If(
                b(self.expr(&i.test_expr)?)?,
                b(self.expr(&i.true_expr)?)?,
                b(self.expr(i.false_expr.as_ref()?)?)?,
            ),
            ast::Expr::Test(t) if t.name == "none" && t.args.is_empty() => {
                Expr::IsNone(b(self.expr(&t.expr)?)?)
            }
            ast::Expr::Filter(f) => {
                let value = b(self.expr(f.expr.as_ref()?)?)?;
                match (f.name, f.args.as_slice()) {
                    ("default", [ast::CallArg::Pos(d)]) => Expr::Default(value, b(self.expr(d)?)?),
                    ("length", []) => Expr::Length(value),
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    /// Compiles a template; `None` when it uses anything but text, `{{ }}` and `{% if %}`.
    pub fn compile_template(&mut self, source: &str) -> Option<Vec<Piece>> {
        let config = Default::default();
        match parse(source, "", config, WhitespaceConfig::default()).ok()? {
            ast::Stmt::Template(t) => self.pieces(&t.children),
            _ => None,
        }
    }

    fn pieces(&mut self, stmts: &[ast::Stmt<'_>]) -> Option<Vec<Piece>> {
        stmts
            .iter()
            .map(|s| {
                Some(match s {
                    ast::Stmt::EmitRaw(r) => Piece::Raw(r.raw.to_string()),
                    ast::Stmt::EmitExpr(e) => match &e.expr {
                        ast::Expr::Filter(f) if f.args.is_empty() => {
                            let i = super::FILTERS.iter().position(|(n, _)| *n == f.name);
                            match (i, &f.expr) {
                                (Some(i), Some(x)) => Piece::Emit(self.expr(x)?, Some(i)),
                                _ => Piece::Emit(self.expr(&e.expr)?, None),
                            }
                        }
                        x => Piece::Emit(self.expr(x)?, None),
                    },
                    ast::Stmt::IfCond(c) => Piece::If(
                        self.expr(&c.expr)?,
                        self.pieces(&c.true_body)?,
                        self.pieces(&c.false_body)?,
                    ),
                    _ => return None,
                })
            })
            .collect()
    }

    fn path(&mut self, e: &ast::Expr<'_>) -> Option<usize> {
        match e {
            ast::Expr::Var(v) => Some(self.intern(None, v.id)),
            ast::Expr::GetAttr(g) => {
                let parent = self.path(&g.expr)?;
                Some(self.intern(Some(parent), g.name))
            }
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// [`Scope::seen`]'s mark of a path not looked up yet, and of one that holds for every subject.
const NEVER: u64 = u64::MAX - 1;
const ALWAYS: u64 = u64::MAX;

/// One subject's context and the paths looked up so far. Reused from subject to subject
/// (`reset`), so a cgroup costs no allocation here.
pub(crate) struct Scope<'a> {
    paths: &'a Paths,
    /// The subject's variables for minijinja; for a cgroup, made on first use (most cgroups
    /// need none: their facts are read straight from the model).
    ctx: std::cell::OnceCell<Value>,
    /// The cgroup `cg` is (model, `node`'s value, index).
    subject: Option<(&'a Arc<Model>, &'a Value, usize)>,
    /// Per path: the value found, and for which subject ([`Scope::now`]; [`ALWAYS`] for a
    /// path outside `cg`). Counting subjects instead of forgetting every value on each reset
    /// saves a pass over all the paths per cgroup.
    seen: Vec<(u64, V)>,
    now: u64,
    held: Vec<Value>,
    kept: Vec<Value>,
    parts: Option<[u64; PART_KEYS.len()]>,
    /// Room a text is rendered in before it is copied at its size (see [`Scope::rendered`]).
    text: String,
}

impl<'a> Scope<'a> {
    pub fn new(paths: &'a Paths, ctx: Value) -> Scope<'a> {
        Scope {
            paths,
            ctx: ctx.into(),
            subject: None,
            seen: vec![(NEVER, V::Undefined); paths.len()],
            now: 0,
            held: Vec::new(),
            kept: Vec::new(),
            parts: None,
            text: String::new(),
        }
    }

    /// The same scope for cgroup `idx` of the model whose `node` is `node`: what does not
    /// depend on `cg` (`node`, the constants) is kept.
    pub fn reset(&mut self, model: &'a Arc<Model>, node: &'a Value, idx: usize) {
        self.ctx = std::cell::OnceCell::new();
        self.subject = Some((model, node, idx));
        self.now += 1;
        self.held.clear();
        self.parts = None;
    }

    /// Path `i` has value `v` for every subject this scope will see.
    pub fn pin(&mut self, i: usize, v: V) {
        self.seen[i] = (ALWAYS, v);
    }

    /// The subject's variables, for minijinja.
    pub fn ctx(&self) -> &Value {
        self.ctx.get_or_init(|| match self.subject {
            Some((model, node, idx)) => super::facts::cgroup_context(model, node, idx),
            None => Value::UNDEFINED,
        })
    }

    /// A value back as minijinja's (as minijinja's own evaluation would have made it).
    pub fn value(&self, v: V) -> Value {
        match v {
            V::Int(i) => Value::from(i),
            V::Float(f) => Value::from(f),
            V::Bool(b) => Value::from(b),
            V::None => Value::from(()),
            V::Obj(Ref::Held(i)) => self.held[i as usize].clone(),
            V::Obj(Ref::Kept(i)) => self.kept[i as usize].clone(),
            V::Obj(Ref::Const(i)) => self.paths.consts[i as usize].clone(),
            V::Undefined => Value::UNDEFINED,
        }
    }

    fn obj(&self, r: Ref) -> &Value {
        match r {
            Ref::Held(i) => &self.held[i as usize],
            Ref::Kept(i) => &self.kept[i as usize],
            Ref::Const(i) => &self.paths.consts[i as usize],
        }
    }

    /// A path's value (`Undefined` for a missing attribute); `None` where minijinja would
    /// fail (an attribute of an undefined value).
    fn lookup(&mut self, i: usize) -> Option<V> {
        let (when, v) = self.seen[i];
        if when == self.now || when == ALWAYS {
            return Some(v);
        }
        if let (Some((model, _, idx)), Some(direct)) = (self.subject, &self.paths.direct[i]) {
            let v = V::of_read(direct.read(model, idx, &mut self.parts));
            if let Some(v) = v {
                self.seen[i] = (self.now, v);
                return Some(v);
            }
        }
        let (parent, key) = &self.paths.entries[i];
        let value = match parent {
            None => match self.ctx().as_object()?.get_value(key) {
                Some(v) => v,
                None => {
                    let name = key.as_str()?;
                    let global = self.paths.globals.iter().find(|(k, _)| k == name);
                    global.map_or(Value::UNDEFINED, |(_, g)| g.clone())
                }
            },
            // An attribute of an undefined value is an error in strict mode; of anything
            // else that is not an object (none, a number, a string), undefined.
            Some(p) => match self.lookup(*p)? {
                V::Undefined => return None,
                V::Obj(r) => match self.obj(r).as_object() {
                    Some(o) => o.get_value(key).unwrap_or(Value::UNDEFINED),
                    None => Value::UNDEFINED,
                },
                _ => Value::UNDEFINED,
            },
        };
        let v = match V::scalar(&value) {
            Some(v) => v,
            None if !self.paths.varies[i] => {
                self.kept.push(value);
                V::Obj(Ref::Kept(self.kept.len() as u32 - 1))
            }
            None => {
                self.held.push(value);
                V::Obj(Ref::Held(self.held.len() as u32 - 1))
            }
        };
        self.seen[i] = (
            if self.paths.varies[i] {
                self.now
            } else {
                ALWAYS
            },
            v,
        );
        Some(v)
    }

    /// Truthiness as minijinja's (strict mode refuses undefined values: `None`).
    fn truthy(&self, v: V) -> Option<bool> {
        Some(match v {
            V::Int(i) => i != 0,
            V::Float(f) => f != 0.0,
            V::Bool(b) => b,
            V::None => false,
            V::Obj(r) => self.obj(r).is_true(),
            V::Undefined => return None,
        })
    }

    /// Evaluates an expression; `None` means "ask minijinja".
    pub fn eval(&mut self, e: &Expr) -> Option<V> {
        match self.eval_or_undefined(e)? {
            V::Undefined => None,
            v => Some(v),
        }
    }

    /// Whether `e` evaluates to `false`, exactly as `matches!(self.eval(e),
    /// Some(V::Bool(false)))`: the answer of most rules' conditions on most cgroups, found
    /// from the leading conjuncts of the [`Scope::quick`] shapes, without the general
    /// evaluator's frames (~a third of the conditions' time).
    pub fn is_false(&mut self, e: &Expr) -> bool {
        match e {
            // An `and` is the value of its first falsy conjunct: `false` if the conjuncts
            // before it are truthy and it is `false`.
            Expr::And(all) => {
                for x in all {
                    match self.quick(x) {
                        Some(V::Bool(false)) => return true,
                        Some(v) if self.truthy(v) == Some(true) => {}
                        _ => break,
                    }
                }
            }
            e => {
                if let Some(v) = self.quick(e) {
                    return matches!(v, V::Bool(false));
                }
            }
        }
        matches!(self.eval(e), Some(V::Bool(false)))
    }

    /// `eval` of the commonest conjuncts: a path compared with a constant, a path, its
    /// negation, `is none`, `is not none`, and `or`s, arithmetic and comparisons of those;
    /// where it gives a value, `eval` gives the same. `None` for anything else (and
    /// where `eval` gives `None`).
    fn quick(&mut self, x: &Expr) -> Option<V> {
        // The path arms stay flat, not through `quick` itself: the recursive form ran the
        // rules 8% slower (instructions; the hot arms were no longer inlined).
        let path = |s: &mut Self, x: &Expr| match x {
            Expr::Path(i) => match s.lookup(*i)? {
                V::Undefined => None,
                v => Some(v),
            },
            _ => None,
        };
        match x {
            Expr::CmpPath(op, i, r) => match self.lookup(*i)? {
                V::Undefined => None,
                l => Some(V::Bool(self.compare(*op, l, *r)?)),
            },
            Expr::Path(_) => path(self, x),
            Expr::IsNone(p) => Some(V::Bool(matches!(path(self, p)?, V::None))),
            Expr::Not(inner) => match &**inner {
                Expr::IsNone(p) => Some(V::Bool(!matches!(path(self, p)?, V::None))),
                p => {
                    let v = path(self, p)?;
                    Some(V::Bool(!self.truthy(v)?))
                }
            },
            // Operands of those shapes in an `or`, an arithmetic or a comparison (`(cg.x or 0)
            // > 0`, `cg.a + cg.b >= 32 * MiB`), taken as `eval` takes them.
            Expr::Or(l, r) => {
                let l = self.quick(l)?;
                if self.truthy(l)? {
                    Some(l)
                } else {
                    self.quick(r)
                }
            }
            Expr::Arith(op, l, r) => arith(*op, self.quick(l)?, self.quick(r)?),
            Expr::CmpConst(op, l, r) => {
                let l = self.quick(l)?;
                Some(V::Bool(self.compare(*op, l, *r)?))
            }
            // Two sides that are not constants (`cg.usage_bytes > cg.limit_bytes + cg.fuzz_bytes`,
            // `cg.x * 10 >= cg.usage_bytes`): ~4,900 conditions of a 5,000-cgroup node.
            Expr::Cmp(op, l, r) => {
                let (l, r) = (self.quick(l)?, self.quick(r)?);
                Some(V::Bool(self.compare(*op, l, r)?))
            }
            Expr::Const(v) if !matches!(v, V::Undefined) => Some(*v),
            _ => None,
        }
    }

    /// Like `eval`, but a missing attribute is `V::Undefined` (for `default`).
    fn eval_or_undefined(&mut self, e: &Expr) -> Option<V> {
        Some(match e {
            Expr::Const(v) => *v,
            Expr::Path(i) => self.lookup(*i)?,
            Expr::Arith(op, l, r) => arith(*op, self.eval(l)?, self.eval(r)?)?,
            Expr::CmpPath(op, i, r) => match self.lookup(*i)? {
                V::Undefined => return None,
                l => V::Bool(self.compare(*op, l, *r)?),
            },
            Expr::CmpConst(op, l, r) => {
                let l = self.eval(l)?;
                V::Bool(self.compare(*op, l, *r)?)
            }
            Expr::Cmp(op, l, r) => {
                let (l, r) = (self.eval(l)?, self.eval(r)?);
                V::Bool(self.compare(*op, l, r)?)
            }
            Expr::And(all) => {
                let (last, first) = all.split_last()?;
                for x in first {
                    let v = self.eval(x)?;
                    if !self.truthy(v)? {
                        return Some(v);
                    }
                }
                self.eval(last)?
            }
            Expr::Or(l, r) => {
                let l = self.eval(l)?;
                if self.truthy(l)? {
                    l
                } else {
                    self.eval(r)?
                }
            }
            Expr::Not(x) => {
                let v = self.eval(x)?;
                V::Bool(!self.truthy(v)?)
            }
            Expr::Neg(x) => match self.eval(x)? {
                V::Int(i) => V::Int(i.checked_neg()?),
                V::Float(f) => V::Float(-f),
                _ => return None,
            },
            Expr::If(c, t, f) => {
                let c = self.eval(c)?;
                if self.truthy(c)? {
                    self.eval(t)?
                } else {
                    self.eval(f)?
                }
            }
            Expr::IsNone(x) => V::Bool(matches!(self.eval(x)?, V::None)),
            Expr::Default(x, d) => match self.eval_or_undefined(x)? {
                V::Undefined => self.eval(d)?,
                v => v,
            },
            Expr::Length(x) => match self.eval(x)? {
                V::Obj(r) => V::Int(i64::try_from(self.obj(r).len()?).ok()?),
                _ => return None,
            },
        })
    }

    /// Renders a compiled template into `out`; `None` means "ask minijinja".
    /// `pieces` rendered and trimmed, in the scope's reused room: one allocation per text,
    /// its own.
    pub fn rendered(&mut self, pieces: &[Piece]) -> Option<Arc<str>> {
        let mut out = std::mem::take(&mut self.text);
        out.clear();
        let done = self.render(pieces, &mut out);
        let text = done.map(|()| out.trim().into());
        self.text = out;
        text
    }

    pub fn render(&mut self, pieces: &[Piece], out: &mut String) -> Option<()> {
        for p in pieces {
            match p {
                Piece::Raw(t) => out.push_str(t),
                Piece::Emit(e, filter) => {
                    let v = self.eval(e)?;
                    match (filter, v) {
                        (Some(f), v) => out.push_str(&(super::FILTERS[*f].1)(self.value(v))),
                        (None, V::Obj(r)) => write!(out, "{}", self.obj(r)).ok()?,
                        (None, v) => write!(out, "{}", self.value(v)).ok()?,
                    }
                }
                Piece::If(c, yes, no) => {
                    let c = self.eval(c)?;
                    let body = if self.truthy(c)? { yes } else { no };
                    self.render(body, out)?;
                }
            }
        }
        Some(())
    }

    fn compare(&self, op: Cmp, l: V, r: V) -> Option<bool> {
        use std::cmp::Ordering;
        let ord: Ordering = match (l, r) {
            (V::Int(a), V::Int(b)) => a.cmp(&b),
            (V::Int(_) | V::Float(_), V::Int(_) | V::Float(_)) => {
                exact_float(l)?.partial_cmp(&exact_float(r)?)?
            }
            _ => {
                // Other kinds: equality only, of none, strings and numbers (a string never
                // equals a number, none only none) or of two booleans. minijinja orders
                // mixed kinds by kind, and compares booleans with numbers as numbers: not
                // compiled.
                let string = |v: V| match v {
                    V::Obj(r) => self.obj(r).as_str().map(|_| ()),
                    _ => None,
                };
                let eq = match (l, r) {
                    (V::Bool(a), V::Bool(b)) => a == b,
                    (V::None, V::None) => true,
                    (V::Obj(a), V::Obj(b)) => self.obj(a).as_str()? == self.obj(b).as_str()?,
                    (V::None | V::Int(_) | V::Float(_), V::Obj(_)) => string(r).map(|_| false)?,
                    (V::Obj(_), V::None | V::Int(_) | V::Float(_)) => string(l).map(|_| false)?,
                    (V::None, V::Int(_) | V::Float(_)) | (V::Int(_) | V::Float(_), V::None) => {
                        false
                    }
                    _ => return None,
                };
                return match op {
                    Cmp::Eq => Some(eq),
                    Cmp::Ne => Some(!eq),
                    _ => None,
                };
            }
        };
        Some(match op {
            Cmp::Eq => ord.is_eq(),
            Cmp::Ne => ord.is_ne(),
            Cmp::Lt => ord.is_lt(),
            Cmp::Lte => ord.is_le(),
            Cmp::Gt => ord.is_gt(),
            Cmp::Gte => ord.is_ge(),
        })
    }
}

/// A comparison node; the right side evaluated once if it is a constant.
fn cmp(op: Cmp, l: Expr, r: Expr) -> Expr {
    match (l, r) {
        (Expr::Path(i), Expr::Const(c)) => Expr::CmpPath(op, i, c),
        (l, Expr::Const(c)) => Expr::CmpConst(op, Box::new(l), c),
        (l, r) => Expr::Cmp(op, Box::new(l), Box::new(r)),
    }
}

fn arith(op: Arith, l: V, r: V) -> Option<V> {
    Some(match (l, r) {
        (V::Int(a), V::Int(b)) => match op {
            Arith::Add => V::Int(a.checked_add(b)?),
            Arith::Sub => V::Int(a.checked_sub(b)?),
            Arith::Mul => V::Int(a.checked_mul(b)?),
            Arith::Div => V::Float(a as f64 / b as f64),
        },
        (l, r) => {
            let (a, b) = (float(l)?, float(r)?);
            V::Float(match op {
                Arith::Add => a + b,
                Arith::Sub => a - b,
                Arith::Mul => a * b,
                Arith::Div => a / b,
            })
        }
    })
}

/// A number as a float, as minijinja converts for mixed arithmetic.
fn float(v: V) -> Option<f64> {
    match v {
        V::Int(i) => Some(i as f64),
        V::Float(f) => Some(f),
        _ => None,
    }
}

/// A number as a float only where the conversion is certainly exact (minijinja compares
/// other integers with floats differently); never NaN.
fn exact_float(v: V) -> Option<f64> {
    const EXACT: i64 = 1 << 53;
    let f = match v {
        V::Int(i) if (-EXACT..=EXACT).contains(&i) => i as f64,
        V::Float(f) => f,
        _ => return None,
    };
    (!f.is_nan()).then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case: compiled, and the same value as minijinja's.
    fn same(source: &str, ctx: serde_json::Value) {
        let env = super::super::environment();
        let mut paths = Paths::new(&env);
        let e = paths
            .compile(source)
            .unwrap_or_else(|| panic!("{source} did not compile"));
        let ctx = Value::from_serialize(ctx);
        let want = env.compile_expression(source).unwrap().eval(&ctx).unwrap();
        let mut scope = Scope::new(&paths, ctx);
        let got = scope
            .eval(&e)
            .unwrap_or_else(|| panic!("{source} deferred"));
        let got = scope.value(got);
        assert_eq!((got.kind(), &got), (want.kind(), &want), "{source}");
    }

    #[test]
    fn agrees_with_minijinja() {
        let ctx = serde_json::json!({
            "cg": {"a": 3, "b": 2.5, "s": "x", "n": null, "t": true, "l": [1, 2], "m": {},
                   "big": u64::MAX},
        });
        for s in [
            "cg.a + 1",
            "cg.a - cg.b",
            "cg.a * MiB",
            "cg.a / 2",
            "cg.a >= 3 and cg.b < 3",
            "cg.a == 3.0",
            "cg.b > 2",
            "cg.s == \"x\"",
            "cg.s != \"y\"",
            "cg.t == true",
            "cg.n is none",
            "not (cg.n is none)",
            "cg.a is not none",
            "cg.n or 0",
            "cg.a and cg.s",
            "cg.n and cg.s",
            "not cg.a",
            "-(cg.a)",
            "cg.missing | default(7)",
            "cg.a | default(7)",
            "cg.l | length",
            "cg.s if cg.t else none",
            "cg.a if cg.n else cg.b",
            "cg.l and cg.a",
            "cg.n == \"x\"",
            "cg.s != 1",
            "cg.n == 0",
            "cg.s == cg.n",
            "cg.n.x | default(1)",
            "cg.a.x | default(1)",
            "cg.m or 1",
        ] {
            same(s, ctx.clone());
        }
    }

    #[test]
    fn templates_agree_with_minijinja() {
        let env = super::super::environment();
        let ctx = Value::from_serialize(serde_json::json!({
            "cg": {"a": 3, "b": 2.5, "f": 2.0, "s": "x", "n": null, "big": 5_000_000_000u64},
        }));
        for source in [
            "plain text",
            "{{ cg.a }} and {{ cg.b }}, {{ cg.f }}, {{ cg.s }}, {{ cg.n }}",
            "{{ cg.big | bytes }} ({{ cg.big | num }}, {{ cg.b | pct }}, {{ cg.a | duration }})",
            "{% if cg.a > 2 %}big{% else %}small{% endif %}: {{ (cg.a * MiB) | bytes }}",
            "a {% if cg.n %}x{% endif %}\n  b {%- if cg.s == \"x\" %} y {% endif -%} c",
        ] {
            let mut paths = Paths::new(&env);
            let t = paths
                .compile_template(source)
                .unwrap_or_else(|| panic!("{source} did not compile"));
            let want = env.render_str(source, &ctx).unwrap();
            let mut got = String::new();
            Scope::new(&paths, ctx.clone())
                .render(&t, &mut got)
                .unwrap_or_else(|| panic!("{source} deferred"));
            assert_eq!(got, want, "{source}");
        }
        let mut paths = Paths::new(&env);
        for source in [
            "{% for x in cg.l %}{% endfor %}",
            "{{ cg.b | round(1) }}",
            "{{ (cg.a | bytes) ~ \"!\" }}",
        ] {
            assert!(paths.compile_template(source).is_none(), "{source}");
        }
    }

    #[test]
    fn the_short_way_to_false_agrees_with_evaluating() {
        let env = super::super::environment();
        let mut paths = Paths::new(&env);
        let ctx = serde_json::json!({
            "cg": {"a": 3, "z": 0, "n": null, "s": "x", "t": true, "f": false, "m": {}},
        });
        let mut short = 0;
        for s in [
            "cg.a > 1 and cg.z > 0",
            "cg.a > 1 and cg.n is none and cg.z > 0",
            "cg.a > 1 and cg.n is not none and cg.z > 0",
            "cg.n is none and cg.f",
            "cg.t and cg.s and cg.z >= 1",
            // The first falsy value is not `false`: the condition is not false.
            "cg.a > 1 and cg.z and cg.f",
            "cg.a > 1 and cg.n and cg.f",
            // An error before the false conjunct is an error, not false.
            "cg.a > 1 and cg.missing > 1 and cg.f",
            "cg.missing is none and cg.f",
            "cg.m and cg.f",
            "cg.a > 1 and cg.t",
            "cg.f",
            "cg.n is none",
            "cg.s is none",
            "(cg.n or 0) > 0",
            "(cg.a or 0) > 0",
            "cg.z or cg.f",
            "cg.f or cg.z",
            "cg.a + cg.z > 5",
            "cg.a * MiB >= 64 * MiB",
            "(cg.missing or 0) > 0",
            "cg.s + 1 > 0",
            "cg.a > 1 and cg.z > cg.a + cg.z",
            "cg.a > 1 and cg.a * 2 <= cg.z",
            "cg.a > cg.z and cg.f",
            "cg.a > cg.z and cg.t",
            "cg.z > cg.a and cg.t",
            "cg.a > 1 and cg.missing > cg.z and cg.f",
            "cg.a > 1 and cg.n > cg.z and cg.f",
            "cg.a > 1 and cg.s == cg.n and cg.f",
            "cg.a > 1 and cg.s != cg.s and cg.t",
        ] {
            let e = paths.compile(s).unwrap();
            let ctx = Value::from_serialize(&ctx);
            let full = matches!(
                Scope::new(&paths, ctx.clone()).eval(&e),
                Some(V::Bool(false))
            );
            let quick = Scope::new(&paths, ctx).is_false(&e);
            assert_eq!(quick, full, "{s}");
            short += quick as usize;
        }
        assert_eq!(short, 17, "false conditions among the cases");
    }

    #[test]
    fn defers_where_minijinja_decides() {
        let env = super::super::environment();
        let mut paths = Paths::new(&env);
        let ctx = Value::from_serialize(serde_json::json!({
            "cg": {"n": null, "s": "x", "m": {}, "big": u64::MAX}
        }));
        for s in [
            "cg.big * 2",
            "cg.big > 1.5",
            "cg.missing > 1",
            "cg.n > 1",
            "cg.s + 1",
            "cg.n.x",
            "cg.m.x",
            "cg.missing.x",
            "cg.t == 1",
            "cg.n < 1",
            "nothing",
        ] {
            let e = paths.compile(s).unwrap();
            assert!(Scope::new(&paths, ctx.clone()).eval(&e).is_none(), "{s}");
        }
        for s in ["[1, 2] | max", "cg.s ~ \"y\"", "1 < 2 < 3", "cg[\"s\"]"] {
            assert!(paths.compile(s).is_none(), "{s}");
        }
    }
}
