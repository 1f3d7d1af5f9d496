"""videogn.layers.replace_children: the submodule swap behind convert_norm, standardize_convs and the zoo."""

from torch import nn

from videogn.layers import replace_children


def test_replaces_children_by_qualified_name_and_not_inside_replacements():
    model = nn.Sequential(nn.ReLU(), nn.Sequential(nn.Conv3d(3, 4, 1), nn.ReLU()))
    seen = []

    def swap(child, path):
        seen.append(path)
        if isinstance(child, nn.ReLU):
            return nn.Sequential(nn.ReLU())  # a replacement that holds what it replaced: never walked
        return None

    assert replace_children(model, swap) == 2
    assert seen == ["0", "1", "1.0", "1.1"]
    assert isinstance(model[0], nn.Sequential) and isinstance(model[1][1], nn.Sequential)
    assert isinstance(model[1][0], nn.Conv3d)


def test_the_root_itself_is_never_replaced():
    relu = nn.ReLU()
    assert replace_children(relu, lambda child, path: nn.Identity()) == 0
