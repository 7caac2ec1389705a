"""A :class:`torch.nn.ModuleList` of one kind of module, typed for its users."""

from typing import Generic, Iterable, Iterator, TypeVar, Union, cast, overload

from torch import nn

M = TypeVar("M", bound=nn.Module)


class ModuleList(nn.ModuleList, Generic[M]):
    """Holds its modules like :class:`torch.nn.ModuleList` (same parameter names and state dict
    keys); iterating or indexing it gives ``M`` rather than a plain ``Module`` to the type checker."""

    def __init__(self, modules: Iterable[M] = ()) -> None:
        super().__init__(modules)

    def __iter__(self) -> Iterator[M]:
        return cast(Iterator[M], super().__iter__())

    @overload
    def __getitem__(self, index: slice) -> "ModuleList[M]": ...

    @overload
    def __getitem__(self, index: int) -> M: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[M, "ModuleList[M]"]:
        return cast(Union[M, "ModuleList[M]"], super().__getitem__(index))
