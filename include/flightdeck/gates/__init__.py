"""The gates: the ML Test Score (Breck et al. 2017) from evidence its checks produce
(``fd_test_evidence``), the hard promotion gates (``fd_gate_results``), and the decision that
moves ``champion`` (keeping ``previous_champion``) or records a rejection or rollback
(``fd_promotions``); the gate report in the lake."""
