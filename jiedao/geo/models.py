"""The district's places: district → street → community → grid → building → standard address.

Codes follow the style of the national administrative division codes: a 6-digit district,
a 9-digit street (district + 3), a 12-digit community (street + 3), a 15-digit grid
(community + 3) and an 18-digit building (grid + 3). Geometries are GeoJSON text in
WGS-84 lon/lat; centroids are kept beside them for quick maps and distances.
Lower levels carry the codes of every level above them so that scope filters are one
equality test on the row itself.
"""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jiedao.db import Base


class _Area:
    name: Mapped[str] = mapped_column(String(100))
    geometry: Mapped[str | None] = mapped_column(Text, default=None)
    centroid_lon: Mapped[float | None] = mapped_column(Float, default=None)
    centroid_lat: Mapped[float | None] = mapped_column(Float, default=None)


class District(_Area, Base):
    __tablename__ = "geo_district"
    code: Mapped[str] = mapped_column(String(6), primary_key=True)
    city: Mapped[str] = mapped_column(String(50), default="")
    streets: Mapped[list[Street]] = relationship(back_populates="district", order_by="Street.code")


class Street(_Area, Base):
    __tablename__ = "geo_street"
    code: Mapped[str] = mapped_column(String(9), primary_key=True)
    district_code: Mapped[str] = mapped_column(ForeignKey("geo_district.code"), index=True)
    district: Mapped[District] = relationship(back_populates="streets")
    communities: Mapped[list[Community]] = relationship(
        back_populates="street", order_by="Community.code"
    )


class Community(_Area, Base):
    __tablename__ = "geo_community"
    code: Mapped[str] = mapped_column(String(12), primary_key=True)
    street_code: Mapped[str] = mapped_column(ForeignKey("geo_street.code"), index=True)
    street: Mapped[Street] = relationship(back_populates="communities")
    grids: Mapped[list[Grid]] = relationship(back_populates="community", order_by="Grid.code")


class Grid(_Area, Base):
    __tablename__ = "geo_grid"
    code: Mapped[str] = mapped_column(String(15), primary_key=True)
    community_code: Mapped[str] = mapped_column(ForeignKey("geo_community.code"), index=True)
    street_code: Mapped[str] = mapped_column(ForeignKey("geo_street.code"), index=True)
    community: Mapped[Community] = relationship(back_populates="grids")


class Road(Base):
    """A named road; the address parser uses the set of road names as its dictionary."""

    __tablename__ = "geo_road"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    geometry: Mapped[str | None] = mapped_column(Text, default=None)  # GeoJSON LineString


class Building(Base):
    __tablename__ = "geo_building"
    code: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    # residential / commercial / office / school / market / hospital / public
    kind: Mapped[str] = mapped_column(String(20), index=True)
    compound: Mapped[str | None] = mapped_column(String(100), default=None, index=True)
    floors: Mapped[int | None] = mapped_column(Integer, default=None)
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    geometry: Mapped[str | None] = mapped_column(Text, default=None)  # footprint polygon
    grid_code: Mapped[str] = mapped_column(ForeignKey("geo_grid.code"), index=True)
    community_code: Mapped[str] = mapped_column(ForeignKey("geo_community.code"), index=True)
    street_code: Mapped[str] = mapped_column(ForeignKey("geo_street.code"), index=True)


class Address(Base):
    """A standard address (标准地址) at door-plate and building level.

    ``full`` is the canonical text: ``{city}{district}{road}{number}号{compound}{building}``.
    The parsed parts are stored so that lookups are exact matches on normalised fields.
    """

    __tablename__ = "geo_address"
    code: Mapped[str] = mapped_column(String(24), primary_key=True)
    full: Mapped[str] = mapped_column(String(200), unique=True)
    road: Mapped[str] = mapped_column(String(50), index=True)
    number: Mapped[str] = mapped_column(String(20))  # door number, e.g. "88" or "88-1"
    compound: Mapped[str | None] = mapped_column(String(100), default=None)
    building_no: Mapped[str | None] = mapped_column(String(20), default=None)  # "3" for 3栋
    building_code: Mapped[str] = mapped_column(ForeignKey("geo_building.code"), index=True)
    grid_code: Mapped[str] = mapped_column(ForeignKey("geo_grid.code"), index=True)
    community_code: Mapped[str] = mapped_column(ForeignKey("geo_community.code"), index=True)
    street_code: Mapped[str] = mapped_column(ForeignKey("geo_street.code"), index=True)
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_geo_address_road_number", "road", "number"),
        Index("ix_geo_address_compound_building", "compound", "building_no"),
    )


class Landmark(Base):
    """A place people name instead of an address: 小区, school, market, metro station…"""

    __tablename__ = "geo_landmark"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    address_code: Mapped[str | None] = mapped_column(ForeignKey("geo_address.code"), default=None)
    grid_code: Mapped[str] = mapped_column(ForeignKey("geo_grid.code"), index=True)
    community_code: Mapped[str] = mapped_column(ForeignKey("geo_community.code"), index=True)
    street_code: Mapped[str] = mapped_column(ForeignKey("geo_street.code"), index=True)
    aliases: Mapped[list[LandmarkAlias]] = relationship(
        back_populates="landmark", cascade="all, delete-orphan"
    )


class LandmarkAlias(Base):
    __tablename__ = "geo_landmark_alias"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    landmark_id: Mapped[int] = mapped_column(ForeignKey("geo_landmark.id", ondelete="CASCADE"), index=True)
    alias: Mapped[str] = mapped_column(String(100), index=True)
    landmark: Mapped[Landmark] = relationship(back_populates="aliases")
