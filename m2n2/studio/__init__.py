"""M2N2 Studio: the web app layer on top of the library (needs the ``app`` extra).

The library (:mod:`m2n2`) is arrays in, arrays out; this package holds everything that knows
about the web: per-user state (:mod:`.session`, :mod:`.objects`), the one GPU boundary
(:mod:`.gpu`), pictures and status text (:mod:`.views`), what the serving process shares
(:mod:`.serving`, :mod:`.limits`, :mod:`.priority`, :mod:`.examples`), the components by name
(:mod:`.ui`) and the event handlers by job (:mod:`.handlers`: :mod:`.images`, :mod:`.clicks`,
:mod:`.sharing`, :mod:`.settings`, :mod:`.api`, over one :mod:`.page`). ``app.py`` lays it out.
"""
