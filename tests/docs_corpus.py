"""A small document collection and questions whose answer is one document, for the retrieval tests of the
framework adapters and the local-docs example."""

DOCUMENTS = {
    "guitar": "The guitarist tuned his six strings before the concert and played a long acoustic solo.",
    "password": "To change a forgotten account password, open the login page and follow the reset link we email you.",
    "quantum": "Quantum computers store information in qubits, which can be in a superposition of zero and one.",
    "volcano": "Lava and ash erupted from the volcano, and the villages on its slopes were evacuated.",
    "bread": "Knead the dough for ten minutes, let it rise for an hour, then bake the loaf at 220 degrees.",
    "football": "The striker scored twice in the second half and the home team won the football match.",
    "tax": "Self-employed people must file their income tax return and pay what they owe by the end of January.",
    "whales": "Blue whales are the largest animals on Earth and feed almost entirely on tiny krill.",
}

QUESTIONS = {
    "how do I recover my login credentials?": "password",
    "what is a qubit?": "quantum",
    "recipe for baking bread at home": "bread",
    "which sea creature is the biggest animal?": "whales",
    "who won the soccer game?": "football",
    "when is the deadline for my income tax return?": "tax",
}
