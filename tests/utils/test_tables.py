"""The shared table pieces render exactly what the reports print."""

from mtlora_deploy.utils.tables import count_cell, markdown_table


def test_markdown_table_has_a_header_a_rule_per_column_and_one_line_per_row():
    text = markdown_table(["a", "b"], [[1, "x"], [2.5, None]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| 2.5 | None |"]
    assert markdown_table(("only",), []) == "| only |\n|---|"  # no rows: header and rule only


def test_count_cell_groups_thousands_and_shows_millions():
    assert count_cell(1_234_567) == "1,234,567 (1.23 M)"
    assert count_cell(0) == "0 (0.00 M)"
