"The package's structure, checked from the modules' own imports: no import circle, no private name across modules."
import ast, pathlib
import smallsel_nb

PKG = pathlib.Path(smallsel_nb.__file__).parent
MODS = {p.stem: p for p in PKG.glob("*.py") if p.stem not in ("_modidx", "__init__")}

def imports(name:str)->list[tuple[str, str]]:
    "(module, imported name) for every `from .x import y` / `from smallsel_nb.x import y` in a module, at any depth."
    out = []
    for n in ast.walk(ast.parse(MODS[name].read_text())):
        if isinstance(n, ast.ImportFrom):
            mod = n.module or ""
            if n.level == 1: tgt = mod
            elif mod.startswith("smallsel_nb."): tgt = mod.split(".", 1)[1]
            else: continue
            out += [(tgt, a.name) for a in n.names]
    return out

def graph()->dict[str, set]: return {m: {t for t, _ in imports(m) if t in MODS and t != m} for m in MODS}

def test_no_import_circle():
    g, state = graph(), {}
    def visit(m, path):
        state[m] = "open"
        for t in g[m]:
            assert state.get(t) != "open", f"import circle: {' -> '.join(path + [m, t])}"
            if t not in state: visit(t, path + [m])
        state[m] = "done"
    for m in g:
        if m not in state: visit(m, [])

def test_no_private_name_crosses_a_module():
    bad = [f"{m} imports {t}.{n}" for m in MODS for t, n in imports(m) if t != m and n.startswith("_") and not n.startswith("__")]
    assert not bad, bad

def test_the_check_sees_imports():
    "The checker is not vacuous: it finds the engine's real dependencies."
    g = graph()
    assert "lm" in g["scoring"] and "scoring" in g["distributed"] and "core" in g["lm"]
