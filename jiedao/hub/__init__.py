"""Data hub (大数据归集统筹): source ledgers, standardisation, linkage and golden archives."""
