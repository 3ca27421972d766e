"""M2N2 Studio: the web app layer on top of the library (needs the ``app`` extra).

The library (:mod:`m2n2`) is arrays in, arrays out; this package holds everything that knows
about the web: per-user state (:mod:`.session`), the one GPU boundary (:mod:`.gpu`), pictures and
status text (:mod:`.views`), the stateless API's helpers (:mod:`.api`), what the serving process
shares (:mod:`.serving`) and the event handlers (:mod:`.handlers`). ``app.py`` lays it out.
"""
