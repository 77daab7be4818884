"""The run-time checker for jvid's annotations while the tests run: beartype, with int accepted where float is
annotated (PEP 484's numeric tower). Users can enable the same with
`pytest --jaxtyping-packages=jvid,jvid._typecheck.typechecker` or `jaxtyping.install_import_hook`."""

from beartype import BeartypeConf, beartype

typechecker = beartype(conf=BeartypeConf(is_pep484_tower=True))
