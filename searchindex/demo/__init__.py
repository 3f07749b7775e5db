"""The offline demo (:mod:`.run`) and its seeded scene generator (:mod:`.synthetic`)."""
