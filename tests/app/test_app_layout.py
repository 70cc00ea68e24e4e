"""The app's layout as the browser receives it (the Blocks config), checked without a browser."""

from __future__ import annotations

import gradio_app


def _find(node: dict, pred) -> list[dict]:
    found = [node] if pred(node) else []
    for child in node.get("children", []) or []:
        found += _find(child, pred)
    return found


def test_every_child_of_the_tabs_is_a_tab():
    # Gradio's frontend numbers tabs by their place among the Tabs' children: anything else there (a State,
    # a Timer) makes a lazily shown tab register over its neighbour (seen: Evaluate replaced Inside).
    app = gradio_app.build_app()
    try:
        config = app.get_config_file()
        types = {c["id"]: c["type"] for c in config["components"]}
        tabs = _find(config["layout"], lambda n: types.get(n["id"]) == "tabs")
        assert tabs, "no gr.Tabs in the layout"
        top = tabs[0]
        kinds = [types[c["id"]] for c in top["children"]]
        assert kinds == ["tabitem"] * len(kinds), kinds
        labels = [next(c for c in config["components"] if c["id"] == child["id"])["props"].get("label")
                  for child in top["children"]]
        # Predict first (issue 19): a visitor classifies a photo from the first screen, on a phone too.
        assert labels == ["Predict", "Architecture", "Inside", "Train", "Evaluate", "Your own classes", "Compare"]
    finally:
        app.close()
