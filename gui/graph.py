"""A live throughput graph: bytes per second in and out over the last minutes."""

from __future__ import annotations

from collections import deque

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from .messages import format_rate

HISTORY_SECONDS = 300
IN_COLOR = QColor("#2e7dd7")
OUT_COLOR = QColor("#e07b00")


class ThroughputGraph(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.samples: deque[tuple[float, float]] = deque(maxlen=HISTORY_SECONDS)
        self._last: tuple[float, int, int] | None = None  # uptime, bytes in, bytes out
        self.setMinimumSize(320, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def add_stats(self, uptime: float, bytes_in: int, bytes_out: int) -> None:
        """One statistics tick; the rate is the difference to the previous one."""
        if self._last is not None and uptime > self._last[0]:
            dt = uptime - self._last[0]
            self.samples.append((max(0, bytes_in - self._last[1]) / dt,
                                 max(0, bytes_out - self._last[2]) / dt))
            self.update()
        self._last = (uptime, bytes_in, bytes_out)

    def reset(self) -> None:
        self.samples.clear()
        self._last = None
        self.update()

    def current(self) -> tuple[float, float]:
        return self.samples[-1] if self.samples else (0.0, 0.0)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(4, 18, -4, -4)
        p.fillRect(self.rect(), self.palette().base())
        p.setPen(QPen(self.palette().mid().color(), 1))
        p.drawRect(rect)
        peak = max((max(s) for s in self.samples), default=0.0)
        scale = max(peak, 1024.0) * 1.1
        for series, color in ((0, IN_COLOR), (1, OUT_COLOR)):
            if len(self.samples) < 2:
                break
            path = QPainterPath()
            step = rect.width() / (HISTORY_SECONDS - 1)
            x0 = rect.right() - step * (len(self.samples) - 1)
            for i, sample in enumerate(self.samples):
                point = QPointF(x0 + i * step,
                                rect.bottom() - sample[series] / scale * rect.height())
                if i == 0:
                    path.moveTo(point)
                else:
                    path.lineTo(point)
            p.setPen(QPen(color, 2))
            p.drawPath(path)
        rate_in, rate_out = self.current()
        p.setPen(self.palette().text().color())
        p.drawText(QRectF(4, 0, self.width() - 8, 16), Qt.AlignmentFlag.AlignLeft,
                   f"last {HISTORY_SECONDS // 60} min, peak {format_rate(peak)}")
        p.setPen(IN_COLOR)
        p.drawText(QRectF(4, 0, self.width() - 8, 16), Qt.AlignmentFlag.AlignRight,
                   f"in {format_rate(rate_in)}   ")
        p.setPen(OUT_COLOR)
        p.drawText(QRectF(4, 0, self.width() - 8 - 130, 16), Qt.AlignmentFlag.AlignRight,
                   f"out {format_rate(rate_out)}")
        p.end()
