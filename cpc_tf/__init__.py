"""cpc_tf: CPC v2 (Hénaff et al., "Data-Efficient Image Recognition with CPC")."""
